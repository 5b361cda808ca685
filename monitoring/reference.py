"""The reference profile of a registered version, pure: what scoring needs of the training data.

Computed once from the training split at registration (a sorted sample and PSI bins per feature,
summary statistics, the reference prediction distribution, row count, data fingerprint) and stored
with the version, so scoring never reads the training data again. `to_bytes`/`from_bytes` give its
stored form: one `.npz` file (arrays, and the rest as JSON), no pickle.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import numpy as np

from monitoring.drift_stats import psi_bins, psi_shares
from training import predicted_class

PROFILE_VERSION = 1


@dataclass(frozen=True)
class NumericReference:
    """One numeric column of the reference: a sorted sample (for KS and Wasserstein), its PSI bins and
    shares, and summary statistics over every reference row."""

    sorted_sample: np.ndarray
    psi_edges: np.ndarray
    psi_shares: np.ndarray
    mean: float
    std: float
    minimum: float
    maximum: float

    @classmethod
    def of(cls, values: np.ndarray, sample: np.ndarray, bins: int) -> NumericReference:
        edges = psi_bins(values, bins)
        return cls(np.sort(values[sample]).astype(np.float64), edges, psi_shares(values, edges),
                   float(values.mean()), float(values.std()), float(values.min()), float(values.max()))


@dataclass(frozen=True)
class ReferenceProfile:
    """Per feature a `NumericReference`; the reference's predicted-class counts and, per class, the
    predicted probability's `NumericReference`."""

    features: dict[str, NumericReference]
    classes: tuple
    class_counts: np.ndarray
    probabilities: dict[str, NumericReference]
    rows: int
    fingerprint: str
    temperature: float = 1.0  # scales the probabilities before estimating accuracy (fitted at registration)
    categories: dict = field(default_factory=dict)   # categorical column → CategoricalReference
    missing: dict = field(default_factory=dict)      # numeric column with gaps → (missing, rows)
    task: str = "classification"  # regression: no classes; probabilities["prediction"] is the predicted values'

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    def to_bytes(self) -> bytes:
        arrays, meta = {}, {"profile_version": PROFILE_VERSION, "rows": self.rows, "fingerprint": self.fingerprint,
                            "classes": list(self.classes), "features": {}, "probabilities": {},
                            "temperature": self.temperature, "task": self.task}
        for group, refs in (("features", self.features), ("probabilities", self.probabilities)):
            for i, (name, ref) in enumerate(refs.items()):
                key = f"{group}{i}"
                meta[group][name] = {"key": key, "mean": ref.mean, "std": ref.std, "minimum": ref.minimum,
                                     "maximum": ref.maximum}
                arrays[f"{key}_sample"], arrays[f"{key}_edges"], arrays[f"{key}_shares"] = (
                    ref.sorted_sample, ref.psi_edges, ref.psi_shares)
        arrays["class_counts"] = self.class_counts
        meta["categories"] = {name: ref.to_json() for name, ref in self.categories.items()}
        meta["missing"] = {name: list(v) for name, v in self.missing.items()}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ReferenceProfile:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            meta = json.loads(arrays["meta"].tobytes())
            if meta.get("profile_version") != PROFILE_VERSION:
                raise ValueError(f"reference profile version {meta.get('profile_version')!r} is not "
                                 f"{PROFILE_VERSION}; rebuild it with `handoff monitor profile`")
            groups = {}
            for group in ("features", "probabilities"):
                groups[group] = {name: NumericReference(arrays[f"{m['key']}_sample"], arrays[f"{m['key']}_edges"],
                                                        arrays[f"{m['key']}_shares"], m["mean"], m["std"],
                                                        m["minimum"], m["maximum"])
                                 for name, m in meta[group].items()}
            from monitoring.categorical import CategoricalReference

            return cls(groups["features"], tuple(meta["classes"]), arrays["class_counts"], groups["probabilities"],
                       int(meta["rows"]), meta["fingerprint"], float(meta.get("temperature", 1.0)),
                       {n: CategoricalReference.from_json(r) for n, r in meta.get("categories", {}).items()},
                       {n: (int(v[0]), int(v[1])) for n, v in meta.get("missing", {}).items()},
                       meta.get("task", "classification"))


def build_profile(x: np.ndarray, features: list[str], proba: np.ndarray, classes: list, fingerprint: str, *,
                  sample_size: int = 20_000, bins: int = 10, seed: int = 0,
                  categories: dict | None = None, task: str = "classification",
                  predictions: np.ndarray | None = None) -> ReferenceProfile:
    """The profile of the reference rows `x` (rows × numeric features, in order; NaN where a value
    was missing), of their categorical columns (`categories`: name → values), and the model's class
    probabilities for them; at most `sample_size` rows kept per numeric column (seeded), over the
    values present, statistics over all of them, and each column's gaps counted. For a regression
    model `proba` is its predicted values for the rows (rows × 1) and the reference of its
    predictions is `predictions` (the validation split's, which training did not fit; else
    `proba`'s)."""
    from monitoring.categorical import CategoricalReference

    if x.ndim != 2 or x.shape[1] != len(features) or x.shape[0] == 0:
        raise ValueError(f"reference rows must be a non-empty matrix of {len(features)} feature column(s)")
    width = 1 if task == "regression" else len(classes)
    if proba.shape != (x.shape[0], width):
        raise ValueError(f"probabilities must be {x.shape[0]} rows × {width} "
                         f"{'prediction' if task == 'regression' else 'classes'}, not {proba.shape}")
    n = x.shape[0]
    sample = np.sort(np.random.default_rng(seed).permutation(n)[:sample_size])
    feature_refs, missing = {}, {}
    for j, f in enumerate(features):
        column = x[:, j].astype(np.float64)
        gaps = np.isnan(column)
        if gaps.any():  # the values present, sampled among themselves
            column = column[~gaps]
            if not len(column):
                raise ValueError(f"reference column {f!r} has no value")
            missing[f] = (int(gaps.sum()), n)
            feature_refs[f] = NumericReference.of(
                column, np.sort(np.random.default_rng(seed).permutation(len(column))[:sample_size]), bins)
        else:
            feature_refs[f] = NumericReference.of(column, sample, bins)
    known = {name: CategoricalReference.of(list(values)) for name, values in (categories or {}).items()}
    if task == "regression":
        values = np.asarray(proba[:, 0] if predictions is None else predictions, dtype=np.float64).reshape(-1)
        picked = np.sort(np.random.default_rng(seed).permutation(len(values))[:sample_size])
        return ReferenceProfile(feature_refs, (), np.zeros(0, dtype=np.int64),
                                {"prediction": NumericReference.of(values, picked, bins)}, n, fingerprint,
                                categories=known, missing=missing, task=task)
    prediction = predicted_class(proba)
    probability_refs = {str(c): NumericReference.of(proba[:, k].astype(np.float64), sample, bins)
                        for k, c in enumerate(classes)}
    return ReferenceProfile(feature_refs, tuple(classes), np.bincount(prediction, minlength=len(classes)),
                            probability_refs, n, fingerprint, categories=known, missing=missing)
