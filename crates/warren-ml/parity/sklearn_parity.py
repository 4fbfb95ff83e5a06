"""scikit-learn's figures for Warren's parity benchmark, on the splits Warren makes.

Run once, with scikit-learn and pandas from PyPI, and commit the JSON it prints:

    cargo bench -p warren-ml --bench parity -- --export /tmp/parity
    python3 -m venv /tmp/skvenv && /tmp/skvenv/bin/pip install ./crates/warren-ml/parity
    /tmp/skvenv/bin/python -m sklearn_parity /tmp/parity > crates/warren-ml/parity/sklearn.json

Each split file holds the raw rows (gaps as null) and which columns Warren's fitted
preprocessing reads as numbers and as categories. Every run is the pipeline a scikit-learn user
writes for such a table:

    Pipeline([("prep", ColumnTransformer([
        ("num", Pipeline([SimpleImputer(strategy="mean"), StandardScaler()]), numeric),
        ("cat", Pipeline([SimpleImputer(strategy="most_frequent"),
                          OneHotEncoder(handle_unknown="ignore")]), categorical)])),
        ("model", estimator)])

fitted on the training rows and scored on the held-out ones. Each estimator gets the
hyperparameters of the same run in `src/parity.rs` (RUNS); everything else is scikit-learn's
default. Trees, forests and boosting break ties between equally good splits at random, so a
split's score is their mean over random_state 0..REPEATS, as Warren's is over its seeds
0..REPEATS. `fit_ms` is the mean wall time of one `Pipeline.fit`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import ElasticNet, LinearRegression, LogisticRegression
from sklearn.metrics import accuracy_score, r2_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

SEEDS = 10
REPEATS = 5
Make = Callable[[int], Any]
CLASSIFICATION: dict[str, Make] = {
    "logistic": lambda s: LogisticRegression(C=1.0, max_iter=100),
    "decision_tree": lambda s: DecisionTreeClassifier(max_depth=5, random_state=s),
    "random_forest": lambda s: RandomForestClassifier(n_estimators=100, random_state=s),
    "gradient_boosting": lambda s: GradientBoostingClassifier(n_estimators=100, random_state=s),
}
REGRESSION: dict[str, Make] = {
    "linear": lambda s: LinearRegression(),
    "elastic_net": lambda s: ElasticNet(alpha=0.1, l1_ratio=0.5),
    "decision_tree": lambda s: DecisionTreeRegressor(max_depth=5, random_state=s),
    "random_forest": lambda s: RandomForestRegressor(n_estimators=100, random_state=s),
    "gradient_boosting": lambda s: GradientBoostingRegressor(n_estimators=100, random_state=s),
}
DATASETS = ["iris", "winequality", "diabetes", "penguins", "penguins_body_mass", "cars"]
SEEDED = ("decision_tree", "random_forest", "gradient_boosting")


def frame(split: dict[str, Any], part: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows of one part: numeric columns as floats, categories as objects (gaps NaN)."""
    columns: list[str] = split["columns"]
    rows: list[list[Any]] = split[part]
    data: dict[str, pd.Series] = {}
    for j, name in enumerate(columns):
        cells = [np.nan if r[j] is None else r[j] for r in rows]
        numeric = name in split["numeric"] or (name == split["target"] and split["task"] == "regression")
        data[name] = pd.Series(cells, dtype="float64" if numeric else object)
    x = pd.DataFrame(data)
    y = x.pop(split["target"]).to_numpy()
    return x, y


def pipeline(split: dict[str, Any], estimator: Any) -> Pipeline:
    """The user's pipeline for this table's columns."""
    steps = [
        (
            "num",
            Pipeline([("impute", SimpleImputer(strategy="mean")), ("scale", StandardScaler())]),
            split["numeric"],
        )
    ]
    if split["categorical"]:
        encode = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        steps.append(
            (
                "cat",
                Pipeline([("impute", SimpleImputer(strategy="most_frequent")), ("encode", encode)]),
                split["categorical"],
            )
        )
    return Pipeline([("prep", ColumnTransformer(steps, remainder="drop")), ("model", estimator)])


def run(folder: str, dataset: str, name: str, make: Make, classes: bool) -> tuple[list[float], float]:
    """Held-out score per split and the mean milliseconds of one fit."""
    scores: list[float] = []
    spent, fits = 0.0, 0
    for seed in range(SEEDS):
        with open(f"{folder}/{dataset}-{seed}.json") as f:
            split = json.load(f)
        x, y = frame(split, "train")
        tx, ty = frame(split, "test")
        total = 0.0
        repeats = REPEATS if name in SEEDED else 1
        for r in range(repeats):
            model = pipeline(split, make(r))
            started = time.perf_counter()
            model.fit(x, y)
            spent += time.perf_counter() - started
            fits += 1
            p = model.predict(tx)
            total += accuracy_score(ty, p) if classes else r2_score(ty, p)
        scores.append(total / repeats)
    return scores, 1000.0 * spent / fits


def main(folder: str) -> None:
    scores: dict[str, dict[str, list[float]]] = {}
    fit_ms: dict[str, dict[str, float]] = {}
    for dataset in DATASETS:
        with open(f"{folder}/{dataset}-0.json") as f:
            classes = json.load(f)["task"] == "classification"
        scores[dataset], fit_ms[dataset] = {}, {}
        for name, make in (CLASSIFICATION if classes else REGRESSION).items():
            s, ms = run(folder, dataset, name, make, classes)
            scores[dataset][name] = s
            fit_ms[dataset][name] = round(ms, 3)
    out = {"version": sklearn.__version__, "repeats": REPEATS, "scores": scores, "fit_ms": fit_ms}
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main(sys.argv[1])
