"""The CUDA → CPU fallback is reported once per pool process (with its reason), not once
per model session plus once more by the pool."""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort
import pytest

from pipeline.inference.analyze import PhotoAnalyzer
from pipeline.inference.config import InferenceConfig
from pipeline.inference.onnx_sessions import CPU, CUDA, collected_fallbacks, create_session
from pipeline.inference.pool import InferencePool
from pipeline.testing.onnx_fixtures import build_detect_model, build_segment_model

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="CUDA here: no fallback"),
]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> InferenceConfig:
    d = tmp_path_factory.mktemp("fallback-models")
    return InferenceConfig(
        seg_model_path=build_segment_model(d / "seg.onnx", input_size=320),
        det_model_path=build_detect_model(d / "det.onnx", input_size=512),
        seg_input_size=320,
        providers=[CUDA, CPU],
        intra_op_threads=1,
        pool_processes=1,
        warmup=False,
    )


def fallback_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "requested" in r.getMessage()
    ]


def test_collected_block_gathers_each_message_once(
    config: InferenceConfig, caplog: pytest.LogCaptureFixture
) -> None:
    assert config.seg_model_path is not None and config.det_model_path is not None
    with caplog.at_level(logging.DEBUG, logger="pipeline.inference"):
        with collected_fallbacks() as notes:
            create_session(Path(config.seg_model_path), [CUDA, CPU], intra_op_threads=1)
            create_session(Path(config.det_model_path), [CUDA, CPU], intra_op_threads=1)
        assert fallback_warnings(caplog) == []
        assert len(notes) == 1 and "CUDAExecutionProvider requested but not available" in notes[0]
        # outside the block, a session warns as before
        create_session(Path(config.det_model_path), [CUDA, CPU], intra_op_threads=1)
    assert len(fallback_warnings(caplog)) == 1


def test_analyzer_load_in_a_block_reports_once(
    config: InferenceConfig, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="pipeline.inference"),
        collected_fallbacks() as notes,
    ):
        analyzer = PhotoAnalyzer.load(config)
    assert analyzer.provider == CPU
    assert len(notes) == 1
    assert fallback_warnings(caplog) == []


async def test_pool_warns_once_per_process_with_the_reason(
    config: InferenceConfig, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pipeline.inference"):
        async with InferencePool(config) as pool:
            assert pool.workers[0].provider == CPU
    warnings = fallback_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "runs on CPUExecutionProvider although CUDAExecutionProvider" in warnings[0]
    assert "not available in this onnxruntime build" in warnings[0]
