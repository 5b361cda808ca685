"""Model factories used only by the integration tests (imported inside Ray workers)."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from training.models import build_mlp


def crash_first_attempts(n_features: int, n_classes: int, marker: str = "", crashes: int = 1, **mlp) -> nn.Module:
    """An MLP whose first `crashes` constructions in a trial raise, counted in the `marker` file: a flaky
    node. The driver's build before the search (`training.check_model`) is not a node's: it builds."""
    if "TUNE_ORIG_WORKING_DIR" not in os.environ:  # Tune sets it in a trial's process only
        return build_mlp(n_features, n_classes, **mlp)
    path = Path(marker)
    attempts = int(path.read_text()) if path.exists() else 0
    path.write_text(str(attempts + 1))
    if attempts < crashes:
        raise RuntimeError(f"simulated worker failure #{attempts + 1}")
    return build_mlp(n_features, n_classes, **mlp)
