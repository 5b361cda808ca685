"""Which torch device a trial or replica uses, decided from the resources Ray assigned it."""

from __future__ import annotations

from collections.abc import Sequence


def choose_device(assigned_gpu_ids: Sequence[object], cuda_available: bool) -> str:
    """`cuda:0` when Ray assigned this worker a GPU and CUDA sees one, else `cpu`.

    Ray narrows CUDA_VISIBLE_DEVICES to the assigned GPUs, so the first visible device is ours.
    A GPU assigned while CUDA is unavailable is a broken node: refuse rather than silently train
    on the CPU for hours.
    """
    if not assigned_gpu_ids:
        return "cpu"
    if not cuda_available:
        raise RuntimeError(f"Ray assigned GPU(s) {list(assigned_gpu_ids)} but torch sees no CUDA device; "
                           "is a CUDA build of torch installed on this node?")
    return "cuda:0"


def cpu_threads(cpus: float) -> int:
    """Torch intra-op threads for a worker given `cpus` Ray CPUs (at least one)."""
    return max(1, int(cpus))
