"""Which device a serving replica or a batch-inference actor predicts on, from what Ray assigned it."""

from __future__ import annotations


def replica_device(gpu_ids: list) -> str:
    """The first GPU Ray assigned this worker (Ray narrows CUDA_VISIBLE_DEVICES to it), else the CPU."""
    return "cuda:0" if gpu_ids else "cpu"
