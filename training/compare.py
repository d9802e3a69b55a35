"""Compare rebuilt default models with the shipped ones (build-time tool; needs ``onnx``).

    python -m training.compare /tmp/rebuild pipeline/models

For each of det.onnx and seg.onnx: whether the graphs and every weight are identical once the
metadata (which carries the build date) and the doc string (which names the build script:
the shipped files say ``pipeline/models/build.py``, where the same code lived) are set aside,
else the largest weight difference.
Exit status 0 when every model is identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from pipeline.models import MODELS_DIR

MODELS = ("det.onnx", "seg.onnx")


def compare(rebuilt: Path, shipped: Path) -> tuple[bool, str]:
    import onnx
    from onnx import numpy_helper

    a, b = onnx.load(str(rebuilt)), onnx.load(str(shipped))
    wa = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    wb = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    if set(wa) != set(wb):
        return False, f"different weight tensors: {sorted(set(wa) ^ set(wb))[:5]}"
    same = [name for name in wa if np.array_equal(wa[name], wb[name])]
    for model in (a, b):
        model.ClearField("metadata_props")
        model.ClearField("doc_string")
    if a.SerializeToString() == b.SerializeToString():
        return True, f"identical: graph and all {len(wa)} weight tensors (metadata aside)"
    worst = max(
        float(np.max(np.abs(wa[n].astype(np.float64) - wb[n].astype(np.float64))))
        if wa[n].shape == wb[n].shape
        else float("inf")
        for n in wa
    )
    return False, f"{len(same)} of {len(wa)} weight tensors identical, max |Δ| {worst:.3g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__)
    parser.add_argument("rebuilt", type=Path, help="folder the rebuild wrote (--out)")
    parser.add_argument("shipped", type=Path, nargs="?", default=MODELS_DIR)
    args = parser.parse_args(argv)
    ok = True
    for name in MODELS:
        rebuilt, shipped = args.rebuilt / name, args.shipped / name
        if not rebuilt.is_file():
            print(f"{name}: not in {args.rebuilt} (built with --only?)")
            continue
        same, detail = compare(rebuilt, shipped)
        ok &= same
        print(f"{name}: {detail}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
