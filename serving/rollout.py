"""Promotion and rollback as pure decisions over the champion history and the traffic policy."""

from __future__ import annotations

from dataclasses import dataclass

from serving.policy import PolicyError, TrafficPolicy


@dataclass(frozen=True)
class Rollout:
    policy: TrafficPolicy
    champion: int
    history: tuple[int, ...]  # earlier champions, newest last (what `rollback` returns to)


def promote(policy: TrafficPolicy, champion: int | None, history: tuple[int, ...], version: int) -> Rollout:
    """`version` becomes champion with all live traffic; the old champion stays deployed at weight 0
    (warm, so a rollback needs no cold start) and goes on the history."""
    if version == champion:
        return Rollout(TrafficPolicy({version: 100.0}, policy.shadow), version, history)
    weights = {version: 100.0}
    if champion is not None:
        weights[champion] = 0.0
    shadow = {v: p for v, p in policy.shadow.items() if v not in weights}
    new_history = history + (champion,) if champion is not None else history
    return Rollout(TrafficPolicy(weights, shadow), version, new_history)


def rollback(policy: TrafficPolicy, champion: int | None, history: tuple[int, ...]) -> Rollout:
    """The previous champion back with all live traffic; the demoted version stops serving."""
    if not history:
        raise PolicyError("there is no previous champion to roll back to (nothing was promoted)")
    previous = history[-1]
    shadow = {v: p for v, p in policy.shadow.items() if v not in (previous, champion)}
    return Rollout(TrafficPolicy({previous: 100.0}, shadow), previous, history[:-1])
