"""The traffic policy of one model: live weights over versions, sticky keys, shadow mirroring.

Pure: no Ray, no MLflow, no clock. The registry stores a policy as JSON on the registered model
(`handoff.traffic`); the gateway holds the parsed policy and asks it, per request, which version
answers and which versions receive a mirrored copy.

Sticky routing uses weighted rendezvous hashing: every (key, version) pair gets a score
`-weight / ln(u)` with `u` a uniform hash of the pair, and the highest score wins. A key keeps its
version while the weights hold; adding a version moves keys only to it, removing one moves only
its keys, and changing the weight of two versions moves keys only between those two.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Collection
from dataclasses import dataclass, field


class PolicyError(ValueError):
    """A traffic policy that cannot be served; the message names the version or value at fault."""


def _unit_hash(*parts: str) -> float:
    """A uniform value in the open interval (0, 1) from the parts (stable across processes)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2.0**64


@dataclass(frozen=True)
class TrafficPolicy:
    """`weights`: version → relative share of live traffic; `shadow`: version → percent mirrored."""

    weights: dict[int, float]
    shadow: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.weights:
            raise PolicyError("a traffic policy needs at least one version with a weight")
        for v, w in self.weights.items():
            if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise PolicyError(f"version {v}: weight must be a finite number >= 0, got {w!r}")
        if sum(self.weights.values()) <= 0:
            raise PolicyError("the weights sum to 0: at least one version must get traffic")
        for v, p in self.shadow.items():
            if not isinstance(p, (int, float)) or not 0 < p <= 100:
                raise PolicyError(f"shadow version {v}: percent must be in (0, 100], got {p!r}")
            if self.weights.get(v, 0) > 0:
                raise PolicyError(f"version {v} cannot be both live (weight {self.weights[v]}) and shadow")

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def single(cls, version: int) -> TrafficPolicy:
        return cls({int(version): 100.0})

    @classmethod
    def from_json(cls, text: str) -> TrafficPolicy:
        try:
            raw = json.loads(text)
            return cls({int(v): float(w) for v, w in raw["weights"].items()},
                       {int(v): float(p) for v, p in raw.get("shadow", {}).items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, PolicyError):
                raise
            raise PolicyError(f"unreadable traffic policy {text!r}: {exc}") from None

    def to_json(self) -> str:
        return json.dumps({"weights": {str(v): w for v, w in sorted(self.weights.items())},
                           "shadow": {str(v): p for v, p in sorted(self.shadow.items())}}, sort_keys=True)

    # --- derived views ------------------------------------------------------------------------
    @property
    def live_versions(self) -> list[int]:
        return sorted(v for v, w in self.weights.items() if w > 0)

    @property
    def versions(self) -> list[int]:
        """Every version that must be deployed: live, zero-weight (warm) and shadow."""
        return sorted(set(self.weights) | set(self.shadow))

    def shares(self) -> dict[int, float]:
        """Each version's fraction of live traffic (sums to 1)."""
        total = sum(self.weights.values())
        return {v: w / total for v, w in sorted(self.weights.items())}

    # --- decisions ----------------------------------------------------------------------------
    def choose(self, routing_key: str | None, rng: random.Random) -> int:
        """The version that answers: sticky by `routing_key` when given, else random by weight."""
        live = self.live_versions
        if len(live) == 1:
            return live[0]
        if routing_key is not None:
            return max(live, key=lambda v: -self.weights[v] / math.log(_unit_hash(routing_key, str(v))))
        return rng.choices(live, weights=[self.weights[v] for v in live])[0]

    def mirrors(self, rng: random.Random) -> list[int]:
        """The shadow versions that receive a copy of this request."""
        return [v for v, p in sorted(self.shadow.items()) if p >= 100 or rng.random() * 100 < p]

    # --- edits (each returns a new policy) ----------------------------------------------------
    def with_weights(self, weights: dict[int, float]) -> TrafficPolicy:
        """Live traffic set to `weights` exactly; a version given live weight stops being shadow."""
        return TrafficPolicy(dict(weights), {v: p for v, p in self.shadow.items() if weights.get(v, 0) <= 0})

    def with_canary(self, version: int, percent: float) -> TrafficPolicy:
        """`version` gets `percent` of live traffic; the others keep their proportions in the rest."""
        if not 0 < percent < 100:
            raise PolicyError(f"canary percent must be between 0 and 100 (exclusive), got {percent}")
        others = {v: w for v, w in self.weights.items() if v != version and w > 0}
        if not others:
            raise PolicyError(f"version {version} is the only live version; a canary needs another one")
        rest = sum(others.values())
        weights = {v: (100 - percent) * w / rest for v, w in others.items()}
        weights[version] = float(percent)
        return self.with_weights(weights)

    @staticmethod
    def shadow_percent(percent: float) -> float:
        """`percent` as a shadow's share of requests mirrored: 0 stops mirroring, anything in (0, 100]
        mirrors that share; a negative, larger or non-finite value is refused, never read as 0."""
        if not (percent == 0 or 0 < percent <= 100):
            raise PolicyError(f"shadow percent must be in (0, 100], or 0 to stop mirroring; got {percent:g}")
        return float(percent)

    def with_shadow(self, version: int, percent: float) -> TrafficPolicy:
        """Mirror `percent` of requests to `version` (0 stops mirroring to it)."""
        shadow = {v: p for v, p in self.shadow.items() if v != version}
        if self.shadow_percent(percent) > 0:
            if self.weights.get(version, 0) > 0:
                raise PolicyError(f"version {version} is live (weight {self.weights[version]}); "
                                  "shadow only a version that gets no live traffic")
            shadow[version] = float(percent)
        return TrafficPolicy({v: w for v, w in self.weights.items() if not (v == version and w == 0)}, shadow)

    def without(self, version: int) -> TrafficPolicy:
        """The policy once `version` is removed from serving (it must not be the only live one)."""
        weights = {v: w for v, w in self.weights.items() if v != version}
        if not any(w > 0 for w in weights.values()):
            raise PolicyError(f"version {version} carries all live traffic; route traffic elsewhere first")
        return TrafficPolicy(weights, {v: p for v, p in self.shadow.items() if v != version})


def parse_weights(pairs: list[str]) -> dict[int, float]:
    """`["3=10", "2=90"]` → `{3: 10.0, 2: 90.0}`, with an error naming the malformed pair or the weight that
    is negative or not finite (`inf` would make every share nan)."""
    weights: dict[int, float] = {}
    for pair in pairs:
        version, sep, weight = pair.partition("=")
        try:
            if not sep:
                raise ValueError
            v, w = int(version), float(weight)
        except ValueError:
            raise PolicyError(f"{pair!r}: expected VERSION=WEIGHT, for example 3=10") from None
        if not math.isfinite(w) or w < 0:
            raise PolicyError(f"{pair!r}: a weight is a finite number >= 0")
        if v in weights:
            raise PolicyError(f"version {v} is given twice")
        weights[v] = w
    if not weights:
        raise PolicyError("give at least one VERSION=WEIGHT pair")
    return weights


class NotServed(PolicyError):
    """A model the gateway routes nothing to and no version of which runs."""


def check_served(name: str, routed: Collection[str], versions: list[int]) -> None:
    """Refuse to unserve `name` when the gateway routes nothing to it (`routed`: the models in its table)
    and no version of it runs (`versions`): a mistyped name would otherwise be reported as no longer
    served. The refusal names the models that are served."""
    if name in routed or versions:
        return
    served = ", ".join(sorted(routed))
    raise NotServed(f"{name!r} is not served; " + (f"served: {served}" if served else "nothing is served"))
