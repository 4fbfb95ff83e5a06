"""`sk-train`: a scikit-learn model trained in a Python step, handed to Warren's own steps as ONNX.

It takes the `warren.ml.Dataset/1` that Warren's ingest and validate steps checked (an Arrow
table), splits it, fits Pipeline(ColumnTransformer(impute (+ scale) | one-hot), estimator),
exports it with skl2onnx, and sends a `warren.ml.Model/1` with `format = "onnx"`: Warren's
evaluate scores it on the held-out rows, register gates and versions it (its signature read from
the graph), and predict serves it, like a model Warren trained. Run by warren-exec:

    warren-exec -- python3 train.py
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from skl2onnx import to_onnx
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import warren_step as ws


@dataclass
class Params:
    """What to fit and how to hold rows out."""

    estimator: Literal["random_forest", "gradient_boosting", "linear"] = field(
        default="random_forest",
        metadata={"doc": "random_forest, gradient_boosting, or linear (logistic regression / ridge)."},
    )
    n_estimators: int = field(default=100, metadata={"doc": "Trees, for the ensembles."})
    test_fraction: float = field(default=0.25, metadata={"doc": "Share of rows held out for evaluate."})
    seed: int = field(default=0, metadata={"doc": "Seed of the split and the estimator."})


@dataclass
class ArtifactRef:
    uri: str
    hash: str
    bytes: int


@dataclass
class Dataset:
    """warren.ml.Dataset/1, as Warren's validate step sends it (other fields ignored)."""

    artifact: ArtifactRef
    target: str
    task: Literal["classification", "regression"]


def estimator(params: Params, classification: bool) -> Any:
    if params.estimator == "random_forest":
        cls = RandomForestClassifier if classification else RandomForestRegressor
        return cls(n_estimators=params.n_estimators, random_state=params.seed)
    if params.estimator == "gradient_boosting":
        cls = GradientBoostingClassifier if classification else GradientBoostingRegressor
        return cls(n_estimators=params.n_estimators, random_state=params.seed)
    return LogisticRegression(max_iter=2000) if classification else Ridge()


def reference(artifact: ws.Artifact, data: bytes) -> Dict[str, Any]:
    return {"uri": artifact.uri, "hash": artifact.hash, "bytes": len(data)}


@ws.step(
    "sk-train",
    version="1",
    input="warren.ml.Dataset/1",
    output="warren.ml.Model/1",
    params=Params,
    max_duration=600,
)
def train(ctx: ws.Context, params: Params, dataset: Dataset) -> dict:
    """Fits a scikit-learn pipeline on a validated dataset and sends it to evaluate as ONNX."""
    if not 0 < params.test_fraction < 1:
        raise ws.Permanent(f"test_fraction must be between 0 and 1, not {params.test_fraction}")
    if params.n_estimators < 1:
        raise ws.Permanent(f"n_estimators must be at least 1, not {params.n_estimators}")
    table = pa.ipc.open_file(pa.BufferReader(ctx.read(dataset.artifact.uri))).read_all().to_pandas()
    target = dataset.target
    classification = dataset.task == "classification"
    table = table[table[target].notna()]
    x = table.drop(columns=[target])
    numeric: List[str] = [c for c in x.columns if pd.api.types.is_numeric_dtype(x[c])]
    text: List[str] = [c for c in x.columns if c not in numeric]
    # What Warren feeds an ONNX graph: float32 numbers (NaN for a gap), text ("" for a gap).
    x[numeric] = x[numeric].astype(np.float32)
    x[text] = x[text].fillna("").astype(str)
    y = table[target].astype(str) if classification else table[target].astype(float)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=params.test_fraction, random_state=params.seed, stratify=y if classification else None
    )
    numeric_steps: List[Any] = [("impute", SimpleImputer(strategy="median"))]
    if params.estimator == "linear":
        numeric_steps.append(("scale", StandardScaler()))
    pre = ColumnTransformer(
        [("num", Pipeline(numeric_steps), numeric), ("cat", OneHotEncoder(handle_unknown="ignore"), text)]
    )
    model = Pipeline([("pre", pre), ("model", estimator(params, classification))])
    scoring = "accuracy" if classification else "neg_root_mean_squared_error"
    validation = float(np.mean(cross_val_score(model, x_train, y_train, cv=3, scoring=scoring)))
    model.fit(x_train, y_train)
    ctx.log.info("fitted %s on %d rows (%d numeric, %d text columns)", params.estimator, len(x_train), len(numeric), len(text))

    onnx = to_onnx(model, x_train[:1], options={"zipmap": False}, target_opset={"": 17, "ai.onnx.ml": 3})
    graph = onnx.SerializeToString()
    stored = ctx.write("model.onnx", graph)
    held_out = x_test.assign(**{target: y_test})
    test_csv = held_out.to_csv(index=False).encode()
    train_csv = x_train.assign(**{target: y_train}).to_csv(index=False).encode()
    test_ref = reference(ctx.write("test.csv", test_csv), test_csv)
    train_ref = reference(ctx.write("train.csv", train_csv), train_csv)
    classes = [str(c) for c in model.classes_] if classification else []
    ctx.report({"estimator": params.estimator, "validation_score": validation, "rows": len(x_train)})
    return {
        "artifact": reference(stored, graph),
        "candidate": {
            "algorithm": "external",
            "hyperparams": {"estimator": f"scikit-learn {type(model[-1]).__name__}", "n_estimators": params.n_estimators},
        },
        "features": {
            "dataset_hash": dataset.artifact.hash,
            "train": train_ref,
            "test": test_ref,
            "feature_names": list(x.columns),
            "target": target,
            "task": dataset.task,
            "classes": classes,
            "scaler": None,
            "seed": params.seed,
        },
        "trial": 1,
        "trials": 1,
        "metric": "accuracy" if classification else "rmse",
        "validation_score": validation,
        "format": "onnx",
    }


if __name__ == "__main__":
    ws.run(train)
