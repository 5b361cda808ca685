"""The MLflow pyfunc model every registered version is: raw features in, class and probabilities out.

Artifacts: `weights.pt` (the state dict, normalisation buffers included) and `spec.json` (factory,
parameters, feature order, classes). The `training` package travels inside the model
(`code_paths`), so `mlflow.pyfunc.load_model("models:/NAME/V")` needs only the pinned packages.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch

from training.contract import prediction_frame
from training.torch_scorer import TorchScorer


class HandoffTorchModel(mlflow.pyfunc.PythonModel):
    """Loads the network once and predicts on the GPU when the process can see one."""

    def load_context(self, context) -> None:
        from training.models import build_model

        spec = json.loads(Path(context.artifacts["spec"]).read_text())
        n_features = len(spec["features"])
        model = build_model(spec["family"], spec["model_params"], n_features, spec["num_classes"],
                            np.zeros(n_features), np.ones(n_features))
        state = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        # A serving replica names its device in the model config (training.serving_load: the GPU Ray
        # assigned it, or the CPU); elsewhere use the GPU when the process can see one.
        config = getattr(context, "model_config", None) or {}
        self.device = config.get("device") or ("cuda:0" if torch.cuda.is_available() else "cpu")
        self.scorer = TorchScorer(model, self.device)
        self.model = self.scorer.network
        self.features = spec["features"]
        self.num_classes = spec["num_classes"]
        self.classes = spec.get("classes") or list(range(self.num_classes))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities for a float32 matrix whose columns are `self.features` in order."""
        return self.scorer(x)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        missing = [f for f in self.features if f not in model_input.columns]
        if missing:
            raise ValueError(f"input is missing feature column(s) {missing}; expected {self.features}")
        return prediction_frame(self.predict_proba(
            np.ascontiguousarray(model_input[self.features].to_numpy(dtype="float32"))), self.classes)


def model_spec(family: str, model_params: dict, features: list[str], classes: list) -> dict:
    """What `spec.json` holds: the factory and its parameters, the feature order and the classes."""
    return {"family": family, "model_params": model_params, "features": features, "num_classes": len(classes),
            "classes": list(classes)}
