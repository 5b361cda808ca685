"""Model factories used only by the integration tests (imported inside Ray workers)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from training.models import build_mlp


def crash_first_attempts(n_features: int, n_classes: int, marker: str = "", crashes: int = 1, **mlp) -> nn.Module:
    """An MLP whose first `crashes` constructions raise, counted in the `marker` file: a flaky node."""
    path = Path(marker)
    attempts = int(path.read_text()) if path.exists() else 0
    path.write_text(str(attempts + 1))
    if attempts < crashes:
        raise RuntimeError(f"simulated worker failure #{attempts + 1}")
    return build_mlp(n_features, n_classes, **mlp)
