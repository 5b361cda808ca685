"""Batch inference: score a whole Parquet table with a registered version, on Ray Data (`handoff predict`).

A consumer of the same loader (`training.load_version`), answer contract and device choice as a
serving replica, not a part of the gateway (the gateway's request coalescer is `serving/batcher.py`).
Exported here (and from `serving`), imported on first use so that importing the package starts nothing:

- `predict_table`, `BatchResult`: one run, checked before any work, its output whole or absent.
- `BatchConfig`, `load_batch_config`: how the actor pool is sized and what it does with rows it cannot score.
- `BatchInputError`: what the run refused, naming the problem.

Inside: `table` (the run), `config`, `files` (input files, staged output), `read` (Ray Data reading),
`predictor` (the scoring actor), `schema` (the pure table contract), `run` (its MLflow run).
"""

from __future__ import annotations

from cluster.lazy import lazy_exports

#: public name → the module that defines it
_EXPORTS = {
    "predict_table": "serving.batch.table",
    "BatchResult": "serving.batch.table",
    "BatchConfig": "serving.batch.config",
    "load_batch_config": "serving.batch.config",
    "BatchInputError": "serving.batch.schema",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
