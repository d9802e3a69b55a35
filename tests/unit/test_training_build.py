"""A tiny build step (train, export, onnxruntime check) — only where PyTorch is installed
(the ``[train]`` extra, e.g. a ``.venv-train``); CI does not install it, so this skips there."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from pipeline.models import DET_MODEL, SEG_MODEL  # noqa: E402
from pipeline.synth import generate_scene  # noqa: E402
from training.build import recorded_command  # noqa: E402
from training.data import det_scene, seg_scene  # noqa: E402
from training.evaluate import verify_shapes  # noqa: E402
from training.export import (  # noqa: E402
    export_onnx,
    make_det_export,
    make_seg_export,
    model_metadata,
    parity,
)
from training.layout import DET_IMGSZ, DET_NAMES, SEG_IMGSZ, SEG_NAMES  # noqa: E402
from training.train import train_det, train_seg  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_det_trains_exports_and_matches_onnxruntime(tmp_path: Path) -> None:
    net = train_det([det_scene(generate_scene(1, 800, 600))], iters=2, batch=2, seed=0)
    exp = make_det_export(net)
    path = tmp_path / "det.onnx"
    meta = model_metadata({}, "test", "detect", DET_NAMES, DET_IMGSZ, 8)
    export_onnx(exp, DET_IMGSZ, path, ["output0"], meta)
    assert verify_shapes(path, None) == {"det": {"output0": [5, 4096]}}
    assert parity(exp, path, DET_IMGSZ, seed=0) < 1e-3


def test_seg_trains_exports_and_matches_onnxruntime(tmp_path: Path) -> None:
    net = train_seg([seg_scene(generate_scene(2, 800, 600))], iters=2, batch=1, seed=0)
    exp = make_seg_export(net)
    path = tmp_path / "seg.onnx"
    meta = model_metadata({}, "test", "segment", SEG_NAMES, SEG_IMGSZ, 64)
    export_onnx(exp, SEG_IMGSZ, path, ["output0", "output1"], meta)
    shapes = verify_shapes(None, path)
    assert shapes == {"seg": {"output0": [41, 256], "output1": [32, 256, 256]}}
    assert parity(exp, path, SEG_IMGSZ, seed=0) < 1e-2


def test_the_recorded_command_names_no_machine_path() -> None:
    cmd = recorded_command(["--seed", "0", "--out", "out dir"])
    assert cmd == "python -m training.build --seed 0 --out 'out dir'"


def test_warm_start_reproduces_the_shipped_models() -> None:
    from training.warmstart import load_det, load_seg

    det = load_det(DET_MODEL)
    assert parity(make_det_export(det), DET_MODEL, DET_IMGSZ, seed=0) < 1e-3
    seg = load_seg(SEG_MODEL)
    assert parity(make_seg_export(seg), SEG_MODEL, SEG_IMGSZ, seed=0) < 1e-3


def test_warm_start_refuses_a_file_of_the_other_network() -> None:
    from training.warmstart import load_det

    with pytest.raises(ValueError, match="Conv"):
        load_det(SEG_MODEL)


def test_fine_tuning_changes_weights_and_keeps_the_folded_norms() -> None:
    from training.warmstart import load_det

    net = load_det(DET_MODEL)
    before = net.out.weight.detach().clone()
    tuned = train_det(
        [det_scene(generate_scene(1, 800, 600))], iters=2, batch=2, seed=0, init=net, lr=1e-3
    )
    assert tuned is net
    assert not torch.equal(before, tuned.out.weight)
    norm = tuned.c3[0][1]
    assert torch.equal(norm.running_mean, torch.zeros_like(norm.running_mean))
    assert torch.equal(norm.running_var, torch.ones_like(norm.running_var))
