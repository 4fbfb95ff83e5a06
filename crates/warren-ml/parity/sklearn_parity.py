"""scikit-learn's figures for Warren's parity benchmark, on the splits Warren makes.

Run once, with scikit-learn from PyPI, and commit the JSON it prints:

    cargo bench -p warren-ml --bench parity -- --export /tmp/parity
    python3 -m venv /tmp/skvenv && /tmp/skvenv/bin/pip install scikit-learn
    /tmp/skvenv/bin/python crates/warren-ml/parity/sklearn_parity.py /tmp/parity \
        > crates/warren-ml/parity/sklearn.json

Each estimator gets the hyperparameters of the same run in `src/parity.rs` (RUNS); everything
else is scikit-learn's default. Trees, forests and boosting break ties between equally good
splits at random, so a split's score is their mean over random_state 0..REPEATS, as Warren's
is over its seeds 0..REPEATS.
"""

import csv
import json
import sys

import sklearn
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import ElasticNet, LinearRegression, LogisticRegression
from sklearn.metrics import accuracy_score, r2_score
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

SEEDS = 10
REPEATS = 5
CLASSIFICATION = {
    "logistic": lambda s: LogisticRegression(C=1.0, max_iter=100),
    "decision_tree": lambda s: DecisionTreeClassifier(max_depth=5, random_state=s),
    "random_forest": lambda s: RandomForestClassifier(n_estimators=100, random_state=s),
    "gradient_boosting": lambda s: GradientBoostingClassifier(n_estimators=100, random_state=s),
}
REGRESSION = {
    "linear": lambda s: LinearRegression(),
    "elastic_net": lambda s: ElasticNet(alpha=0.1, l1_ratio=0.5),
    "decision_tree": lambda s: DecisionTreeRegressor(max_depth=5, random_state=s),
    "random_forest": lambda s: RandomForestRegressor(n_estimators=100, random_state=s),
    "gradient_boosting": lambda s: GradientBoostingRegressor(n_estimators=100, random_state=s),
}
DATASETS = {"iris": CLASSIFICATION, "winequality": CLASSIFICATION, "diabetes": REGRESSION}


def read(path, classes):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    x = [[float(v) for v in r[:-1]] for r in rows]
    y = [int(r[-1]) if classes else float(r[-1]) for r in rows]
    return x, y


def main(folder):
    scores = {}
    for dataset, estimators in DATASETS.items():
        classes = estimators is CLASSIFICATION
        scores[dataset] = {}
        for name, make in estimators.items():
            runs = []
            for seed in range(SEEDS):
                x, y = read(f"{folder}/{dataset}-{seed}-train.csv", classes)
                tx, ty = read(f"{folder}/{dataset}-{seed}-test.csv", classes)
                seeded = name in ("decision_tree", "random_forest", "gradient_boosting")
                total = 0.0
                for r in range(REPEATS if seeded else 1):
                    p = make(r).fit(x, y).predict(tx)
                    total += accuracy_score(ty, p) if classes else r2_score(ty, p)
                runs.append(total / (REPEATS if seeded else 1))
            scores[dataset][name] = runs
    json.dump({"version": sklearn.__version__, "repeats": REPEATS, "scores": scores}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main(sys.argv[1])
