"""The rebuild check: identical models (metadata aside) pass, a changed weight is reported."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import numpy_helper

from pipeline.testing.onnx_fixtures import build_detect_model
from training.compare import compare


def test_identical_weights_with_other_metadata_and_doc_string_are_identical(tmp_path: Path) -> None:
    a = build_detect_model(tmp_path / "a.onnx")
    b = build_detect_model(tmp_path / "b.onnx")
    model = onnx.load(str(b))
    entry = model.metadata_props.add()
    entry.key, entry.value = "date", "2030-01-01T00:00:00+00:00"
    model.doc_string = "built by another script"
    onnx.save(model, str(b))
    same, detail = compare(a, b)
    assert same, detail


def test_a_changed_weight_is_reported_with_its_size(tmp_path: Path) -> None:
    a = build_detect_model(tmp_path / "a.onnx")
    model = onnx.load(str(a))
    tensor = model.graph.initializer[0]
    values = numpy_helper.to_array(tensor).copy()
    values.flat[0] += 0.5
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    b = tmp_path / "b.onnx"
    onnx.save(model, str(b))
    same, detail = compare(a, b)
    assert not same
    assert "max |Δ| 0.5" in detail
