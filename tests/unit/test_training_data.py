"""Training data and held-out evaluation (no PyTorch needed): they use the runtime's
letterbox, decoders, slicing and overlap measure, and read the shipped models correctly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.inference.yolo import letterbox, letterbox_info
from pipeline.models import DET_MODEL, SEG_MODEL
from pipeline.synth import generate_scene
from training.data import (
    SceneJob,
    generate,
    generator_fingerprint,
    letterbox_u8,
    scene_jobs,
    seg_scene,
    variant_jobs,
)
from training.evaluate import eval_det, match, verify_shapes
from training.layout import PAD, SEG_EXTRA_OFFSET, SEG_NET, VARIANT_OFFSET, VARIANT_STRIDE


def test_the_training_letterbox_is_the_runtimes_in_uint8() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    u8, info = letterbox_u8(rgb, 256)
    chw, ref = letterbox(rgb, 256)
    assert info == ref == letterbox_info(500, 300, 256)
    assert np.array_equal(u8.astype(np.float32) / np.float32(255.0), chw.transpose(1, 2, 0))
    assert u8[0, 0].tolist() == [PAD] * 3


def test_a_seg_scene_has_one_mask_per_container() -> None:
    scene = generate_scene(3, 800, 600)
    seg = seg_scene(scene)
    assert seg.image.shape == (SEG_NET, SEG_NET, 3)
    assert seg.masks.shape == (len(scene.containers), SEG_NET, SEG_NET)
    assert seg.classes.tolist() == [c.class_id for c in scene.containers]


def test_variant_scenes_have_their_own_seeds() -> None:
    jobs = variant_jobs(0, ["wide", "pots"], 2, 1, det=True, seg=True)
    assert [(j[0], j[4], j[3]) for j in jobs] == [
        (VARIANT_OFFSET, "wide", True),
        (VARIANT_OFFSET + 1, "wide", True),
        (VARIANT_OFFSET + VARIANT_STRIDE // 2, "wide", False),
        (VARIANT_OFFSET + VARIANT_STRIDE, "pots", True),
        (VARIANT_OFFSET + VARIANT_STRIDE + 1, "pots", True),
        (VARIANT_OFFSET + VARIANT_STRIDE + VARIANT_STRIDE // 2, "pots", False),
    ]
    # segmentation alone uses the same scenes (which models are built changes no data)
    assert [j[0] for j in variant_jobs(0, ["wide", "pots"], 2, 1, det=False, seg=True)] == [
        j[0] for j in jobs
    ]
    assert variant_jobs(0, ["wide"], 2, 1, det=True, seg=False) == [
        (VARIANT_OFFSET, 2000, 1500, True, "wide"),
        (VARIANT_OFFSET + 1, 2000, 1500, True, "wide"),
    ]


def test_a_scene_without_containers_has_no_masks() -> None:
    scene = generate_scene(4, 640, 480, variant="pots")
    seg = seg_scene(scene)
    assert seg.masks.shape == (len(scene.containers), SEG_NET, SEG_NET)


def test_scene_seeds_do_not_depend_on_which_models_are_built() -> None:
    both = scene_jobs(0, 3, 2, 2, det=True, seg=True)
    assert [j[0] for j in both] == [0, 1, 2, SEG_EXTRA_OFFSET, SEG_EXTRA_OFFSET + 1]
    assert {j[4] for j in both} == {"classic"}
    assert scene_jobs(0, 3, 2, 2, det=True, seg=False) == both[:3]
    assert [j[0] for j in scene_jobs(0, 3, 2, 2, det=False, seg=True)] == [
        0,
        1,
        SEG_EXTRA_OFFSET,
        SEG_EXTRA_OFFSET + 1,
    ]


def test_match_is_greedy_by_score_and_says_which_truths_matched() -> None:
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32)
    pred = np.array([[1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    pm, gm = match(pred, np.array([0.5, 0.9, 0.8]), gt)
    assert pm.tolist() == [False, True, False]  # the better score takes the first plant
    assert gm.tolist() == [True, False]


def test_the_shipped_models_read_through_the_runtime_decoders() -> None:
    shapes = verify_shapes(DET_MODEL, SEG_MODEL)
    assert shapes["det"] == {"output0": [5, 4096]}
    assert shapes["seg"] == {"output0": [41, 256], "output1": [32, 256, 256]}
    report = eval_det(DET_MODEL, [900_000_000], (1024, 1024))
    assert report["slices"] == 4
    assert report["precision"] > 0.6 and report["recall_all"] > 0.6, report


def test_the_scene_cache_gives_back_what_generation_made(tmp_path: Path) -> None:
    jobs: list[SceneJob] = [(7, 400, 300, True, "classic"), (8, 320, 240, False, "trays")]
    made = generate(jobs, 1, tmp_path)
    folder = tmp_path / generator_fingerprint()
    assert sorted(p.name for p in folder.iterdir()) == [
        "classic-7-400x300-det.npz",
        "trays-8-320x240-seg.npz",
    ]
    read = generate(jobs, 1, tmp_path)
    for (det_a, seg_a), (det_b, seg_b) in zip(made, read, strict=True):
        assert np.array_equal(seg_a.image, seg_b.image)
        assert np.array_equal(seg_a.masks, seg_b.masks)
        assert np.array_equal(seg_a.classes, seg_b.classes)
        assert (det_a is None) == (det_b is None)
        if det_a is not None and det_b is not None:
            assert np.array_equal(det_a.image, det_b.image)
            assert np.array_equal(det_a.boxes, det_b.boxes)
            assert np.array_equal(det_a.vis, det_b.vis)
            assert (det_a.height, det_a.width) == (det_b.height, det_b.width)
    # a changed file in the cache is what is read: generation really was skipped
    first = folder / "classic-7-400x300-det.npz"
    with np.load(first) as z:
        arrays = dict(z)
    arrays["det_boxes"] = arrays["det_boxes"][:1]
    np.savez(first, **arrays)
    again = generate(jobs[:1], 1, tmp_path)[0][0]
    assert again is not None and len(again.boxes) == 1
