"""The drift decision, pure: drift is declared when windows drift for `persistence` in a row.

One drifted window is not enough (a burst of odd traffic, a false alarm that survived correction):
the monitor declares drift only after `persistence` consecutive drifted windows, once per episode;
a clean window ends the episode. Each declaration is a `DriftEvent` that names the windows, the
features and their scores, and the version it concerns.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cluster.digest import stable_digest
from monitoring.scoring import WindowScores


@dataclass(frozen=True)
class DriftState:
    """Where a model version's episode stands: drifted windows in a row, and whether it was declared."""

    consecutive: int = 0
    first_window: int | None = None
    declared: bool = False


@dataclass(frozen=True)
class DriftEvent:
    """Drift declared: which model and version, which windows, which features with their scores."""

    event_id: str
    model: str
    version: int
    first_window: int
    last_window: int
    features: dict[str, dict[str, float]]


def decide(state: DriftState, window: WindowScores, window_index: int, model: str, version: int,
           persistence: int) -> tuple[DriftState, DriftEvent | None]:
    """The state after `window` (the `window_index`-th of this version), and the event if drift is
    declared now. Deterministic: the same windows give the same event id (a replay submits nothing twice)."""
    if persistence < 1:
        raise ValueError(f"persistence must be at least 1 window, not {persistence}")
    if not window.drifted:
        return DriftState(), None
    state = replace(state, consecutive=state.consecutive + 1,
                    first_window=window_index if state.first_window is None else state.first_window)
    if state.declared or state.consecutive < persistence:
        return state, None
    features = {s.column: {"statistic": s.statistic, "p_value": s.p_value, "adjusted_p": s.adjusted_p,
                           "psi": s.psi, "wasserstein": s.wasserstein, "jensen_shannon": s.jensen_shannon,
                           **({"effect": s.effect, "tolerance": s.tolerance, "detail": s.detail}
                              if s.effect is not None else {"detail": s.detail} if s.detail else {})}
                for s in window.features if s.drifted}
    event = DriftEvent(f"drift-{stable_digest(model, version, state.first_window)}", model, version,
                       state.first_window, window_index, features)
    return replace(state, declared=True), event
