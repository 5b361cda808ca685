"""The MLflow pyfunc model every registered version is: raw columns in, class and probabilities (or
the predicted value, for regression) out.

Artifacts: `weights.pt` (the state dict, normalisation buffers included) and `spec.json` (factory,
parameters, feature order, classes, and the preparation of the raw columns fitted on the training
split: training/columns.py). The `training` package travels inside the model (`code_paths`), so
`mlflow.pyfunc.load_model("models:/NAME/V")` needs only the pinned packages, and `predict` takes a
frame of the columns as a user has them (strings, booleans, gaps).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch

from training.columns import Preparation
from training.contract import pyfunc_answer
from training.task import CLASSIFICATION, REGRESSION
from training.torch_scorer import TorchScorer


class HandoffTorchModel(mlflow.pyfunc.PythonModel):
    """Loads the network once and predicts on the GPU when the process can see one."""

    def load_context(self, context) -> None:
        from training.models import build_model

        spec = json.loads(Path(context.artifacts["spec"]).read_text())
        # versions registered before preparations existed took their complete numeric columns as they were
        self.preparation = (Preparation.from_json(spec["preparation"]) if spec.get("preparation")
                            else Preparation.numeric(spec["features"]))
        width = self.preparation.width
        self.task = spec.get("task", CLASSIFICATION)
        regression = self.task == REGRESSION
        # the scales are placeholders: the state dict holds the fitted ones
        model = build_model(spec["family"], spec["model_params"], width, 1 if regression else spec["num_classes"],
                            np.zeros(width), np.ones(width), (0.0, 1.0) if regression else None)
        state = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        # A serving replica names its device in the model config (training.serving_load: the GPU Ray
        # assigned it, or the CPU); elsewhere use the GPU when the process can see one.
        config = getattr(context, "model_config", None) or {}
        self.device = config.get("device") or ("cuda:0" if torch.cuda.is_available() else "cpu")
        self.scorer = TorchScorer(model, self.device, regression)
        self.model = self.scorer.network
        self.features = spec["features"]
        self.num_classes = spec["num_classes"]
        self.classes = spec.get("classes") or list(range(self.num_classes))

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """The answer for a prepared float32 matrix (`self.preparation.transform(...).x`): class
        probabilities, or the predicted values (rows × 1)."""
        return self.scorer(x)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame | np.ndarray:
        """The answer for raw rows (the feature columns as a user has them; extra columns ignored): a
        classifier's frame of class and probabilities, a regression model's predicted values."""
        missing = [f for f in self.features if f not in model_input.columns]
        if missing:
            raise ValueError(f"input is missing feature column(s) {missing}; expected {self.features}")
        prepared = self.preparation.transform(model_input[self.features])
        return pyfunc_answer(self.outputs(prepared.x), self.classes, self.task)


def model_spec(family: str, model_params: dict, features: list[str], classes: list,
               preparation: Preparation | None = None, task: str = CLASSIFICATION, loss: str | None = None) -> dict:
    """What `spec.json` holds: the factory and its parameters, the feature order, the classes, the
    task (and regression's loss), and the fitted preparation of the raw columns (the model's input is
    `preparation.width` wide)."""
    spec = {"family": family, "model_params": model_params, "features": features, "num_classes": len(classes),
            "classes": list(classes), "task": task}
    if task == REGRESSION:
        spec["loss"] = loss or "mse"
    if preparation is not None:
        spec["preparation"] = preparation.to_json()
    return spec
