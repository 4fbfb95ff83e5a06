"""scikit-learn models exported with skl2onnx, for Warren's ONNX tests.

    python tests/onnx/sklearn_models.py data/penguins.csv OUT_DIR

Trains a random forest, a logistic regression and a neural network on the penguins (two categorical columns with
gaps, four numeric ones with gaps), each as Pipeline(ColumnTransformer(impute (+ scale for the
logistic regression) | one-hot), estimator), and writes into OUT_DIR:

- rf.onnx, lr.onnx, mlp.onnx: the pipelines as ONNX (mlp: a small neural network),
  probabilities as a tensor (zipmap=False);
- test.csv: the held-out rows, species included;
- expected.json: scikit-learn's predict and predict_proba on them, with the class order;
- svm.onnx: an SVC pipeline (its SVMClassifier operator is one Warren refuses);
- zipmap.onnx: the forest exported with the default ZipMap (a sequence of maps, refused).

A gap in a text column is the empty string here, as Warren feeds it.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from skl2onnx import to_onnx
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC

NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
CATEGORICAL = ["island", "sex"]
TARGET = "species"


def frame(df: pd.DataFrame) -> pd.DataFrame:
    x = df[NUMERIC + CATEGORICAL].copy()
    x[NUMERIC] = x[NUMERIC].astype(np.float32)
    x[CATEGORICAL] = x[CATEGORICAL].fillna("").astype(str)
    return x


def pipeline(estimator: object, scale: bool = True) -> Pipeline:
    # Trees need no scaling (and a scaler computed in float32 by the graph moves values that lie
    # on a split threshold across it, in onnxruntime as in Warren).
    numeric = [("impute", SimpleImputer(strategy="median"))] + ([("scale", StandardScaler())] if scale else [])
    pre = ColumnTransformer(
        [
            ("num", Pipeline(numeric), NUMERIC),
            ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
        ]
    )
    return Pipeline([("pre", pre), ("model", estimator)])


def main(data: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    df = pd.read_csv(data, na_values=["NA"])
    train, test = train_test_split(df, test_size=0.3, random_state=7, stratify=df[TARGET])
    x_train, x_test = frame(train), frame(test)
    expected = {}
    for name, estimator, scale in [
        ("rf", RandomForestClassifier(n_estimators=50, max_depth=6, random_state=0), False),
        ("lr", LogisticRegression(max_iter=2000), True),
        # A plain network: MatMul, Add, Relu, Softmax.
        ("mlp", MLPClassifier(hidden_layer_sizes=(16,), max_iter=2000, random_state=0), True),
    ]:
        model = pipeline(estimator, scale).fit(x_train, train[TARGET])
        onx = to_onnx(model, x_train[:1], options={"zipmap": False}, target_opset={"": 17, "ai.onnx.ml": 3})
        (out / f"{name}.onnx").write_bytes(onx.SerializeToString())
        expected[name] = {
            "classes": [str(c) for c in model.classes_],
            "labels": [str(v) for v in model.predict(x_test)],
            "probabilities": model.predict_proba(x_test).tolist(),
        }
        if name == "rf":
            zipped = to_onnx(model, x_train[:1], target_opset={"": 17, "ai.onnx.ml": 3})
            (out / "zipmap.onnx").write_bytes(zipped.SerializeToString())
    svm = pipeline(SVC()).fit(x_train, train[TARGET])
    svm_onnx = to_onnx(svm, x_train[:1], options={"zipmap": False}, target_opset={"": 17, "ai.onnx.ml": 3})
    (out / "svm.onnx").write_bytes(svm_onnx.SerializeToString())
    test[NUMERIC + CATEGORICAL + [TARGET]].to_csv(out / "test.csv", index=False)
    (out / "expected.json").write_text(json.dumps({"columns": NUMERIC + CATEGORICAL, **expected}))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
