"""Runs Warren's exported models in onnxruntime and compares them with Warren's own predictions.

    python tests/onnx/check_exports.py DIR

DIR/manifest.json lists the models: {"models": [{"name", "file", "labels" | "values"}], "rows":
{dataset: {column: [values, null for a gap]}}}, each model naming its rows' dataset. Each graph
is fed its inputs by name (doubles with NaN for a gap, strings with "" for one). Prints a row per
model and exits 1 unless every label is identical and every value within 1e-5 (relative).
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as rt


def feeds(session: rt.InferenceSession, rows: dict) -> dict:
    out = {}
    for i in session.get_inputs():
        values = rows[i.name]
        if i.type == "tensor(string)":
            column = np.array(["" if v is None else str(v) for v in values], dtype=object)
        else:
            column = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        out[i.name] = column.reshape(-1, 1)
    return out


def main(folder: Path) -> int:
    manifest = json.loads((folder / "manifest.json").read_text())
    failed = 0
    print(f"{'model':<40} {'rows':>5} {'labels equal':>13} {'worst value diff':>17}")
    for m in manifest["models"]:
        session = rt.InferenceSession(str(folder / m["file"]), providers=["CPUExecutionProvider"])
        result = session.run(None, feeds(session, manifest["rows"][m["rows"]]))
        if "labels" in m:
            got = [str(v) for v in result[0].ravel()]
            equal = sum(g == w for g, w in zip(got, m["labels"]))
            ok = equal == len(m["labels"]) == len(got)
            print(f"{m['name']:<40} {len(got):>5} {equal:>13} {'-':>17}")
        else:
            got = result[0].ravel().astype(np.float64)
            want = np.array(m["values"], dtype=np.float64)
            worst = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1.0))) if len(want) else 0.0
            ok = len(got) == len(want) and worst <= 1e-5
            print(f"{m['name']:<40} {len(got):>5} {'-':>13} {worst:>17.2e}")
        if not ok:
            failed += 1
            print(f"  MISMATCH in {m['name']}")
    print(f"{len(manifest['models']) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
