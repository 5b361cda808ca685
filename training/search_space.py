"""Translate the config's search space and scheduler into Ray Tune objects."""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from training.config import Choice, Grid, RandInt, SchedulerConfig, SearchConfig, Uniform


def param_space(search: SearchConfig) -> dict[str, Any]:
    """`{name: tune domain}` for each entry of `search.space`."""
    space: dict[str, Any] = {}
    for name, dist in search.space.items():
        if isinstance(dist, Choice):
            space[name] = tune.choice(dist.values)
        elif isinstance(dist, Grid):
            space[name] = tune.grid_search(dist.values)
        elif isinstance(dist, Uniform):
            space[name] = (tune.loguniform if dist.type == "loguniform" else tune.uniform)(dist.low, dist.high)
        elif isinstance(dist, RandInt):
            space[name] = tune.randint(dist.low, dist.high)
        else:  # pragma: no cover - the config's discriminated union admits nothing else
            raise TypeError(f"unsupported distribution for {name}: {dist!r}")
    return space


def first_config(search: SearchConfig) -> dict[str, Any]:
    """One configuration the space holds, fixed without sampling: each choice's or grid's first value,
    each range's lower bound (what a search builds once before its trials start, to fail early)."""
    return {name: dist.values[0] if isinstance(dist, (Choice, Grid)) else dist.low
            for name, dist in search.space.items()}


def trial_count(search: SearchConfig) -> int:
    """How many trials a complete search runs: `num_samples` for every combination of the grids."""
    count = search.num_samples
    for dist in search.space.values():
        if isinstance(dist, Grid):
            count *= len(dist.values)
    return count


def scheduler(cfg: SchedulerConfig, max_epochs: int) -> TrialScheduler:
    """ASHA over epochs (`training_iteration`), or FIFO."""
    if cfg.type == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="training_iteration", max_t=max_epochs,
        grace_period=min(cfg.grace_period, max_epochs), reduction_factor=cfg.reduction_factor,
    )
