"""The analysis puts the colour warning into PhotoAnalysis.warnings (bundled sample)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from pipeline.inference.analyze import PhotoAnalyzer
from pipeline.inference.config import InferenceConfig
from pipeline.testing.onnx_fixtures import build_detect_model, build_segment_model

SAMPLE = Path(__file__).resolve().parents[2] / "pipeline" / "samples" / "nursery.jpg"


@pytest.fixture(scope="module")
def analyzer(tmp_path_factory: pytest.TempPathFactory) -> PhotoAnalyzer:
    d = tmp_path_factory.mktemp("colour-models")
    config = InferenceConfig(
        seg_model_path=build_segment_model(d / "seg.onnx", input_size=320),
        det_model_path=build_detect_model(d / "det.onnx", input_size=512),
        seg_input_size=320,
        providers=["CPUExecutionProvider"],
        intra_op_threads=1,
        warmup=False,
    )
    return PhotoAnalyzer.load(config)


def jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_grayscale_sample_gets_a_warning_colour_sample_none(analyzer: PhotoAnalyzer) -> None:
    sample = Image.open(SAMPLE).convert("RGB").resize((1000, 750))
    colour = analyzer.analyze(jpeg(sample)).analysis
    assert colour.warnings == []
    gray = analyzer.analyze(jpeg(sample.convert("L").convert("RGB"))).analysis
    assert len(gray.warnings) == 1
    assert "almost no colour" in gray.warnings[0]
    assert "unreliable" in gray.warnings[0]
