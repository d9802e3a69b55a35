"""ONNX Runtime sessions: provider fallback, static-batch padding, fixture models."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from pipeline.inference.onnx_sessions import CPU, CUDA, YoloModel, create_session, provider_options
from pipeline.inference.yolo import decode_detect, decode_segment, letterbox
from pipeline.testing.onnx_fixtures import (
    build_detect_model,
    build_segment_model,
    make_nursery_photo,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("rt-models")
    return {
        "det": build_detect_model(d / "det.onnx", input_size=256),
        "det4": build_detect_model(d / "det4.onnx", input_size=256, batch=4),
        "seg": build_segment_model(d / "seg.onnx", input_size=320),
    }


def test_fixture_models_are_tiny(models: dict[str, Path]) -> None:
    for path in models.values():
        assert path.stat().st_size < 64 * 1024


def test_cuda_requested_on_cpu_machine_falls_back_with_warning(
    models: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    if CUDA in ort.get_available_providers():
        pytest.skip("this machine has CUDA: nothing to fall back from")
    with caplog.at_level(logging.WARNING, logger="pipeline.inference"):
        session, used = create_session(models["det"], [CUDA, CPU], device_id=0, intra_op_threads=1)
    assert used == CPU
    assert session.get_providers()[0] == CPU
    warnings = [r for r in caplog.records if r.name == "pipeline.inference"]
    assert warnings
    assert warnings[0].levelno == logging.WARNING
    assert "CUDAExecutionProvider requested but not available" in warnings[0].getMessage()


def test_only_cuda_requested_still_runs_on_cpu(
    models: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    if CUDA in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    with caplog.at_level(logging.WARNING, logger="pipeline.inference"):
        _, used = create_session(models["det"], [CUDA], intra_op_threads=1)
    assert used == CPU
    assert any("falling back" in r.getMessage() for r in caplog.records)


def test_session_creation_failure_with_cuda_falls_back(
    models: dict[str, Path], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CUDA listed as available but the session cannot be created with it → CPU + warning."""
    real = ort.InferenceSession
    seen: list[Any] = []

    def fake_session(path: str, sess_options: Any = None, providers: Any = None) -> Any:
        seen.append(providers)
        names = [p if isinstance(p, str) else p[0] for p in providers]
        if CUDA in names:
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
        return real(path, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", fake_session)
    with caplog.at_level(logging.WARNING, logger="pipeline.inference"):
        _, used = create_session(models["det"], [CUDA, CPU], device_id=3, intra_op_threads=1)
    assert used == CPU
    assert seen[0][0] == (CUDA, {"device_id": 3, "cudnn_conv_algo_search": "HEURISTIC"})
    assert seen[1] == [CPU]
    messages = [r.getMessage() for r in caplog.records]
    assert any("no CUDA-capable device" in m and "falling back" in m for m in messages)


def test_provider_options() -> None:
    assert provider_options(CUDA, 2) == {"device_id": 2, "cudnn_conv_algo_search": "HEURISTIC"}
    assert provider_options(CPU, 2) == {}


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.onnx"):
        create_session(tmp_path / "nope.onnx", [CPU])


def test_yolo_model_reads_metadata_and_batch_axis(models: dict[str, Path]) -> None:
    det = YoloModel.load(models["det"], kind="detect", providers=[CPU], intra_op_threads=1)
    assert det.spec.class_names == ["plant", "weed"]
    assert det.spec.input_size == 256
    assert det.static_batch is None
    assert det.batch_size(16) == 16
    det4 = YoloModel.load(models["det4"], kind="detect", providers=[CPU], intra_op_threads=1)
    assert det4.static_batch == 4
    assert det4.batch_size(16) == 4
    seg = YoloModel.load(
        models["seg"], kind="segment", providers=[CPU], intra_op_threads=1, input_size=1024
    )
    assert seg.spec.input_size == 320  # the model's fixed input wins over the setting
    assert seg.spec.class_names == ["claro-cajon", "cajon"]
    assert seg.static_batch == 1


def test_static_batch_is_padded_and_split(
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    det = YoloModel.load(models["det"], kind="detect", providers=[CPU], intra_op_threads=1)
    det4 = YoloModel.load(models["det4"], kind="detect", providers=[CPU], intra_op_threads=1)
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 1, (5, 3, 256, 256)).astype(np.float32)
    fed: list[tuple[int, ...]] = []
    real_run = det4.session.run

    def spy(names: Any, feeds: dict[str, np.ndarray]) -> Any:
        fed.append(feeds["images"].shape)
        return real_run(names, feeds)

    monkeypatch.setattr(det4.session, "run", spy)
    (out4,) = det4.run(batch)
    assert fed == [(4, 3, 256, 256), (4, 3, 256, 256)]  # 5 = 4 + (1 padded to 4)
    (out,) = det.run(batch)
    assert out4.shape == out.shape == (5, 6, (256 // 16) ** 2)
    np.testing.assert_allclose(out4, out, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="empty"):
        det.run(batch[:0])


def test_warmup_runs(models: dict[str, Path]) -> None:
    det4 = YoloModel.load(models["det4"], kind="detect", providers=[CPU], intra_op_threads=1)
    det4.warmup()


def test_detect_fixture_finds_green_squares_exactly(models: dict[str, Path]) -> None:
    det = YoloModel.load(models["det"], kind="detect", providers=[CPU], intra_op_threads=1)
    rgb = np.full((256, 256, 3), (120, 80, 50), np.uint8)
    squares = [(13, 21), (100, 37), (190, 190), (30, 150)]
    for x, y in squares:
        rgb[y : y + 24, x : x + 24] = (0, 200, 0)
    tensor, info = letterbox(rgb, 256)
    (out,) = det.run(tensor[None])
    boxes, scores, classes = decode_detect(out[0], 0.25, 0.5, info, 256, 256)
    got = sorted((round(float(b[0]), 2), round(float(b[1]), 2)) for b in boxes)
    assert got == sorted((float(x), float(y)) for x, y in squares)
    np.testing.assert_allclose(boxes[:, 2:] - boxes[:, :2], 24.0, atol=1e-3)
    assert np.all(scores > 0.99)
    assert set(classes.tolist()) == {0}


def test_segment_fixture_finds_two_trays(models: dict[str, Path]) -> None:
    seg = YoloModel.load(models["seg"], kind="segment", providers=[CPU], intra_op_threads=1)
    photo = make_nursery_photo()
    tensor, info = letterbox(photo.rgb, 320)
    out0, protos = seg.run(tensor[None])
    assert out0.shape == (1, 38, 2)
    assert protos.shape == (1, 32, 80, 80)
    h, w = photo.rgb.shape[:2]
    insts = decode_segment(out0[0], protos[0], 0.3, 0.5, info, w, h, input_size=320)
    assert len(insts) == 2
    got = sorted(inst.box for inst in insts)
    for box, tray in zip(got, sorted(photo.trays), strict=True):
        np.testing.assert_allclose(box, tray, atol=16)  # proto stride 4 at scale 1/4
    for inst in insts:
        assert inst.class_id == 1
        assert inst.mask.mean() > 0.95


def test_class_names_must_match_the_model(models: dict[str, Path]) -> None:
    from pipeline.inference.modelspec import ModelSpecError

    with pytest.raises(ModelSpecError, match="class names do not match"):
        YoloModel.load(models["det"], kind="detect", providers=[CPU], class_names=["only-one"])
    with pytest.raises(ModelSpecError, match="expected 'segment'"):
        YoloModel.load(models["det"], kind="segment", providers=[CPU])
