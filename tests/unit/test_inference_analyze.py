"""PhotoAnalyzer on the fixture models: segmentation → sliced batched detection → estimation."""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from pipeline.errors import InvalidSettings
from pipeline.inference import counting as counting_mod
from pipeline.inference.analyze import PhotoAnalyzer
from pipeline.inference.config import BUNDLED_SEG_MODEL, InferenceConfig
from pipeline.inference.slicing import Region, region_detections
from pipeline.inference.yolo import SegInstance
from pipeline.settings import Settings
from pipeline.settings_inference import InferenceSettings
from pipeline.testing.onnx_fixtures import (
    build_detect_model,
    build_segment_model,
    encode_png,
    make_nursery_photo,
)
from pipeline.vision.types import Detection, SegmentEstimation


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("an-models")
    build_detect_model(d / "det.onnx", input_size=512)
    build_detect_model(d / "det4.onnx", input_size=512, batch=4)
    build_segment_model(d / "seg.onnx", input_size=320)
    return d


def _config(model_dir: Path, **kw: Any) -> InferenceConfig:
    base: dict[str, Any] = {
        "seg_model_path": model_dir / "seg.onnx",
        "det_model_path": model_dir / "det.onnx",
        "seg_input_size": 320,
        "providers": ["CPUExecutionProvider"],
        "intra_op_threads": 1,
    }
    base.update(kw)
    return InferenceConfig(**base)


@pytest.fixture(scope="module")
def analyzer(model_dir: Path) -> PhotoAnalyzer:
    a = PhotoAnalyzer.load(_config(model_dir))
    a.warmup()
    return a


def _match(detections: list[Detection], centres: NDArray[np.float64]) -> NDArray[np.float64]:
    got = np.array([(d.cx, d.cy) for d in detections], np.float64).reshape(-1, 2)
    dist = np.hypot(*(got[:, None, :] - centres[None, :, :]).transpose(2, 0, 1))
    return np.asarray(dist.min(axis=1), np.float64)


def test_analyze_two_trays(analyzer: PhotoAnalyzer) -> None:
    photo = make_nursery_photo()
    out = analyzer.analyze(encode_png(photo.rgb))
    a = out.analysis
    assert (a.width, a.height) == (1280, 960)
    assert a.provider == "CPUExecutionProvider"
    # segmentation: two "cajon" trays → container type "box", left tray first is not required
    assert len(a.segments) == 2
    assert {s.container_type for s in a.segments} == {"box"}
    assert {s.class_name for s in a.segments} == {"cajon"}
    for seg in a.segments:
        tray = min(photo.trays, key=lambda t: abs(t[0] - seg.bbox[0]))
        np.testing.assert_allclose(seg.bbox, tray, atol=16)
        assert len(seg.polygon) >= 4
        assert seg.area_px > 0.9 * (tray[2] - tray[0]) * (tray[3] - tray[1])
    # detection: every green square exactly once, at its centre, in its tray's segment
    assert len(a.detections) == len(photo.squares) == 80
    assert _match(a.detections, photo.centres).max() < 0.01
    for det in a.detections:
        assert det.class_name == "plant"
        assert det.w == pytest.approx(24, abs=0.01)
        seg = a.segments[det.segment_index or 0]
        assert seg.bbox[0] <= det.cx <= seg.bbox[2]
    per_segment = [sum(d.segment_index == s.index for d in a.detections) for s in a.segments]
    assert per_segment == [40, 40]
    assert [e.segment_index for e in a.estimations] == [0, 1]
    assert set(a.timings_ms) == {
        "decode",
        "segment",
        "detect",
        "estimate",
        "overlay",
        "thumbnail",
        "total",
        "inference_cpu",
        "total_cpu",
    }
    assert out.thumbnail_jpeg[:3] == b"\xff\xd8\xff"
    # 2 trays × 2×2 slices of 512 with 0.25 overlap, then the 24-px squares (below
    # rescale_min_px) once more in smaller slices: no more plants found, first pass kept
    assert out.slices > 8
    assert len(pickle.dumps(out)) < 64 * 1024  # small enough to cross the pool boundary


def test_batched_and_one_at_a_time_are_identical(model_dir: Path) -> None:
    # 8 slices = 3 + 3 + 2 (no second pass at another scale)
    a = PhotoAnalyzer.load(_config(model_dir, det_batch_size=3, rescale_slices=False))
    photo = make_nursery_photo(skip=0.3, seed=5)
    rgb = photo.rgb
    h, w = rgb.shape[:2]
    _, regions = a.segments_and_regions(a.segment(rgb), w, h)
    batched, n1 = a.detect_sliced(rgb, regions, batched=True)
    single, n2 = a.detect_sliced_one_at_a_time(rgb, regions)
    assert n1 == n2 == 8
    assert sum(len(r.scores) for r in batched) == len(photo.squares)
    for b, s in zip(batched, single, strict=True):
        np.testing.assert_array_equal(b.boxes, s.boxes)
        np.testing.assert_array_equal(b.scores, s.scores)
        np.testing.assert_array_equal(b.classes, s.classes)
    full_b = a.analyze(encode_png(rgb), batched=True).analysis
    full_s = a.analyze(encode_png(rgb), batched=False).analysis
    assert full_b.detections == full_s.detections


def test_static_batch_model_gives_the_same_detections(
    model_dir: Path, analyzer: PhotoAnalyzer
) -> None:
    static = PhotoAnalyzer.load(_config(model_dir, det_model_path=model_dir / "det4.onnx"))
    assert static.det.static_batch == 4
    photo = make_nursery_photo(skip=0.5, seed=9)
    data = encode_png(photo.rgb)
    got = static.analyze(data).analysis.detections
    ref = analyzer.analyze(data).analysis.detections
    assert len(got) == len(ref) == len(photo.squares)
    for g, r in zip(got, ref, strict=True):
        assert (g.cx, g.cy, g.w, g.h, g.class_id) == (r.cx, r.cy, r.w, r.h, r.class_id)
        assert g.confidence == pytest.approx(r.confidence, abs=1e-3)


def test_no_segment_means_whole_photo(analyzer: PhotoAnalyzer) -> None:
    rgb = np.full((600, 700, 3), 235, np.uint8)
    centres = []
    for x, y in [(100, 100), (400, 120), (600, 500), (250, 400)]:
        rgb[y : y + 24, x : x + 24] = (0, 200, 0)
        centres.append((x + 12.0, y + 12.0))
    out = analyzer.analyze(encode_png(rgb))
    a = out.analysis
    assert len(a.segments) == 1
    seg = a.segments[0]
    assert (seg.container_type, seg.class_name, seg.confidence) == ("segment", "segment", 0.0)
    assert seg.bbox == (0.0, 0.0, 700.0, 600.0)
    assert seg.area_px == 700 * 600
    assert len(a.detections) == 4
    assert _match(a.detections, np.array(centres)).max() < 0.01
    assert {d.segment_index for d in a.detections} == {0}
    assert out.slices == 4


def test_unknown_segment_class_maps_to_segment(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = PhotoAnalyzer.load(_config(model_dir, seg_class_names=["claro-cajon", "mystery"]))
    photo = make_nursery_photo(skip=0.8)
    with caplog.at_level(logging.WARNING, logger="pipeline.inference"):
        out = a.analyze(encode_png(photo.rgb))
    assert {s.container_type for s in out.analysis.segments} == {"segment"}
    assert {s.class_name for s in out.analysis.segments} == {"mystery"}
    warned = [r for r in caplog.records if "'mystery'" in r.getMessage()]
    assert len(warned) == 1  # once per class name, not per segment


def test_estimation_gets_segment_local_inputs(
    analyzer: PhotoAnalyzer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[tuple[int, ...], tuple[int, ...], NDArray[np.float32], int]] = []

    def spy(
        crop: NDArray[np.uint8],
        mask: NDArray[np.bool_],
        boxes: Any,
        index: int,
        params: Any,
        plants: NDArray[np.bool_] | None,
    ) -> tuple[SegmentEstimation, NDArray[np.bool_]]:
        calls.append((crop.shape, mask.shape, np.asarray(boxes), index))
        assert plants is None or plants.shape == mask.shape  # the crop's own vegetation
        # the analyzer's parameters, the default plant area replaced by the segment's own
        assert dataclasses.replace(params, default_plant_area_px=2500.0) == analyzer.band_params
        assert params.default_plant_area_px == pytest.approx(576, rel=0.01)  # 24×24 boxes
        estimation = SegmentEstimation(segment_index=index, bands=[], estimated=index + 1)
        return estimation, np.zeros(mask.shape, dtype=bool)

    monkeypatch.setattr(counting_mod, "estimate_segment_and_mask", spy)
    photo = make_nursery_photo()
    a = analyzer.analyze(encode_png(photo.rgb)).analysis
    assert a.total_estimated == 1 + 2
    for (crop_shape, mask_shape, boxes, index), seg in zip(calls, a.segments, strict=True):
        assert crop_shape[:2] == mask_shape
        assert crop_shape[2] == 3
        assert index == seg.index
        x0, y0 = int(np.floor(seg.bbox[0])), int(np.floor(seg.bbox[1]))
        mine = sorted((d.cx, d.cy) for d in a.detections if d.segment_index == seg.index)
        local = sorted(
            (round(float(b[0] + b[2]) / 2 + x0, 2), round(float(b[1] + b[3]) / 2 + y0, 2))
            for b in boxes
        )
        assert local == mine
        assert boxes.min() >= 0
        assert boxes[:, 2].max() <= crop_shape[1]
        assert boxes[:, 3].max() <= crop_shape[0]


def test_detections_outside_the_segment_mask_are_dropped(analyzer: PhotoAnalyzer) -> None:
    mask = np.ones((100, 200), bool)
    mask[:, 100:] = False  # right half of the crop is not container
    region = Region(segment_index=3, x0=50, y0=20, mask=mask)
    boxes = np.array(
        [
            [60, 30, 80, 50],  # centre (70, 40) → local (20, 20): inside
            [62, 30, 82, 50],  # overlaps the first (IOS > 0.5) → merged into it
            [200, 30, 220, 50],  # centre local (160, 20): outside the mask
            [10, 10, 20, 20],  # centre outside the crop
        ],
        np.float32,
    )
    scores = np.array([0.9, 0.8, 0.95, 0.99], np.float32)
    classes = np.zeros(4, np.int64)
    merged = region_detections(region, [(boxes, scores, classes)], analyzer.config)
    assert merged.scores.tolist() == [pytest.approx(0.9)]
    assert merged.boxes[0, 0] == pytest.approx(60)
    empty = region_detections(region, [], analyzer.config)
    assert empty.boxes.shape == (0, 4)


def test_invalid_image_is_rejected(analyzer: PhotoAnalyzer) -> None:
    from pipeline.vision.decode import InvalidImage

    with pytest.raises(InvalidImage):
        analyzer.analyze(b"definitely not an image")


def test_config_from_settings_and_missing_models(tmp_path: Path) -> None:
    settings = Settings(det_batch_size=7, seg_conf=0.4, device_ids=[1, 2], bands=3)
    cfg = InferenceConfig.from_settings(settings)
    assert (cfg.det_batch_size, cfg.seg_conf, cfg.device_ids, cfg.bands) == (7, 0.4, [1, 2], 3)
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    if not BUNDLED_SEG_MODEL.exists():
        # no segmentation configured or bundled: photos are analysed as one segment
        det = tmp_path / "det.onnx"
        det.write_bytes(b"x")
        assert cfg.model_copy(update={"det_model_path": det}).check_models() == (None, det)
        with pytest.raises(FileNotFoundError, match=r"models/seg\.onnx.*PLANTPIPE_SEG_MODEL_PATH"):
            cfg.model_file("segment")
    missing = InferenceConfig(seg_model_path=tmp_path / "x.onnx")
    with pytest.raises(FileNotFoundError, match=r"x\.onnx.*PLANTPIPE_SEG_MODEL_PATH"):
        missing.model_file("segment")


def test_slice_count_without_rescale(model_dir: Path) -> None:
    a = PhotoAnalyzer.load(_config(model_dir, rescale_slices=False))
    out = a.analyze(encode_png(make_nursery_photo().rgb))
    assert out.slices == 8  # 2 trays × 2×2 slices of 512 with 0.25 overlap
    assert len(out.analysis.detections) == 80


def test_undetected_vegetation_is_estimated(analyzer: PhotoAnalyzer) -> None:
    """Dull-green patches the detector cannot see are left to band estimation."""
    photo = make_nursery_photo(skip=0.5, seed=1)
    rgb = photo.rgb.copy()
    for x, y in [(147, 187), (307, 427), (847, 347)]:  # in the soil gaps between squares
        rgb[y : y + 50, x : x + 50] = (80, 130, 60)  # greenness 0 for the fixture detector
    plain = analyzer.analyze(encode_png(photo.rgb)).analysis
    mixed = analyzer.analyze(encode_png(rgb)).analysis
    assert plain.total_estimated == 0
    assert mixed.detections == plain.detections
    assert mixed.total_estimated > 0  # how much is the band estimator's business


def test_one_tray_segmented_twice_under_two_classes_counts_each_plant_once(
    model_dir: Path,
) -> None:
    """The segmentation returns tray 0 twice (``cajon`` and, shifted, ``claro-cajon``
    scoring lower): one segment, and each plant of the photo is detected exactly once."""
    photo = make_nursery_photo()
    rgb = photo.rgb
    h, w = rgb.shape[:2]
    default = PhotoAnalyzer.load(_config(model_dir))
    found = default.segment(rgb)
    assert len(found) == 2
    tray0 = min(found, key=lambda i: i.origin_x)
    dup = SegInstance(
        box=(tray0.box[0] + 8, tray0.box[1] + 6, tray0.box[2] + 8, tray0.box[3] + 6),
        score=tray0.score * 0.8,
        class_id=0,
        mask=tray0.mask.copy(),
        origin_x=tray0.origin_x + 8,
        origin_y=tray0.origin_y + 6,
    )
    instances = [*found, dup]

    def counts(analyzer: PhotoAnalyzer) -> tuple[int, list[int]]:
        segments, regions = analyzer.segments_and_regions(instances, w, h)
        per_region, _ = analyzer.detect_sliced(rgb, regions)
        boxes = np.concatenate([r.boxes for r in per_region])
        got = ((boxes[:, :2] + boxes[:, 2:]) / 2).astype(np.float64)
        dist = np.hypot(*(got[:, None, :] - photo.centres[None, :, :]).transpose(2, 0, 1))
        per_plant = np.bincount(dist.argmin(axis=1), minlength=len(photo.centres))
        return len(segments), per_plant.tolist()

    n_segments, per_plant = counts(default)
    assert n_segments == 2
    assert per_plant == [1] * len(photo.centres)
    # the original pipeline's segments (every instance its own) count tray 0's plants twice
    legacy = PhotoAnalyzer.load(_config(model_dir, segment_merge_overlap=None))
    n_legacy, per_plant_legacy = counts(legacy)
    assert n_legacy == 3
    assert sorted(set(per_plant_legacy)) == [1, 2]


def test_plants_outside_every_segment_are_counted_unassigned(model_dir: Path) -> None:
    """One tray on the left; plants lie on the bare background on the right, where the
    segmentation finds nothing: they are detected (slices over the uncovered area) and
    reported with segment_index None, each once."""
    photo = make_nursery_photo(trays=((60, 100, 600, 880),))
    rgb = photo.rgb.copy()
    outside = [(x, y) for x in range(760, 1200, 96) for y in range(120, 860, 96)]
    for x, y in outside:
        rgb[y : y + 24, x : x + 24] = (0, 200, 0)
    analyzer = PhotoAnalyzer.load(_config(model_dir))
    a = analyzer.analyze(encode_png(rgb)).analysis
    assert len(a.segments) == 1
    inside = [d for d in a.detections if d.segment_index == 0]
    free = [d for d in a.detections if d.segment_index is None]
    assert len(inside) == len(photo.squares)
    assert len(free) == len(outside)
    centres = np.array([(x + 12.0, y + 12.0) for x, y in outside])
    assert _match(free, centres).max() < 0.01
    assert _match(inside, photo.centres).max() < 0.01
    # without counting them, they are silently dropped (the original behaviour)
    off = PhotoAnalyzer.load(_config(model_dir, count_unassigned=False))
    b = off.analyze(encode_png(rgb)).analysis
    assert len(b.detections) == len(photo.squares)


def test_bands_without_detections_use_the_segments_plant_area(model_dir: Path) -> None:
    """Plants only in the top half of each tray; a dull-green patch (undetectable, 48×48)
    in a bottom band. That band has no detections to calibrate on: it takes the plant area
    measured on its segment's detections (24×24 boxes → 576 px²), not the 2500 px² default."""
    photo = make_nursery_photo()
    rgb = photo.rgb.copy()
    for x, y in photo.squares:
        if y > 480:
            rgb[y : y + 24, x : x + 24] = (120, 80, 50)  # soil again
    rgb[700:748, 300:348] = (80, 130, 60)
    kept = sum(y <= 480 for _, y in photo.squares)

    def patch_band(analyzer: PhotoAnalyzer) -> tuple[int, float, bool, int]:
        a = analyzer.analyze(encode_png(rgb)).analysis
        assert sum(d.segment_index is not None for d in a.detections) == kept
        seg = next(s for s in a.segments if s.bbox[0] <= 300 <= s.bbox[2])
        est = a.estimations[seg.index]
        y0 = int(np.floor(seg.bbox[1]))
        band = next(b for b in est.bands if b.y0 <= 724 - y0 < b.y1)
        return band.detections, band.plant_area_px, band.calibrated, band.estimated

    n, area, calibrated, estimated = patch_band(PhotoAnalyzer.load(_config(model_dir)))
    assert (n, calibrated) == (0, False)
    assert area == pytest.approx(576, rel=0.01)
    n0, area0, _, estimated0 = patch_band(
        PhotoAnalyzer.load(_config(model_dir, plant_area_fallback=False))
    )
    assert (n0, area0) == (0, 2500.0)
    # 2304 px of vegetation: about 4 plants of 576 px², 1 phantom-sized one of 2500 px²
    assert estimated >= 3 * estimated0 >= 3


def test_det_max_per_slice_caps_the_boxes_of_every_slice(model_dir: Path) -> None:
    """The setting reaches the decoder: each slice keeps at most that many boxes, its best."""
    rgb = make_nursery_photo(skip=0.3, seed=5).rgb
    h, w = rgb.shape[:2]
    full = PhotoAnalyzer.load(_config(model_dir))
    capped = PhotoAnalyzer.load(_config(model_dir, det_max_per_slice=2))
    jobs = full.detector.uncovered_slices(full.detector.coverage([], w, h))  # the whole grid
    assert len(jobs) > 1
    every = full.detector.detect_slices(rgb, jobs)
    kept = capped.detector.detect_slices(rgb, jobs)
    assert max(len(scores) for _, scores, _ in every) > 2  # the cap has work to do
    for (_, all_scores, _), (_, scores, _) in zip(every, kept, strict=True):
        assert len(scores) == min(2, len(all_scores))
        np.testing.assert_array_equal(scores, np.sort(all_scores)[::-1][: len(scores)])


def _changed(name: str, default: Any) -> Any:
    """A valid value other than ``default`` for the inference setting ``name``."""
    special: dict[str, Any] = {
        "providers": ["CPUExecutionProvider"],
        "device_ids": [1, 2],
        "seg_model_path": Path("/models/seg.onnx"),
        "det_model_path": Path("/models/det.onnx"),
        "seg_class_names": ["tray"],
        "det_class_names": ["plant"],
    }
    if name in special:
        return special[name]
    if isinstance(default, bool):
        return not default
    if isinstance(default, int | float):
        tries = [default + 1, default * 2, default - 1, default * 0.95, default * 1.05]
        for value in tries:
            value = type(default)(round(value, 4))
            try:
                Settings(**{name: value})
            except InvalidSettings:
                continue
            return value
    raise AssertionError(f"give inference setting {name} (default {default!r}) a test value")


def test_every_inference_setting_reaches_the_pool_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One source per setting: each field of ``InferenceSettings`` — a new one included, with
    nothing to copy — is read from its ``PLANTPIPE_`` variable with the one range declared for
    it, and arrives in a pool process (pickled with the pool's initializer, as spawn does)."""
    changed = {
        name: _changed(name, field.get_default(call_default_factory=True))
        for name, field in InferenceSettings.model_fields.items()
    }
    for name, value in changed.items():
        text = str(value) if isinstance(value, Path) else json.dumps(value)
        monkeypatch.setenv(f"PLANTPIPE_{name.upper()}", text)
    sent = pickle.loads(pickle.dumps(InferenceConfig.from_settings(Settings())))
    assert {name: getattr(sent, name) for name in changed} == changed
    assert set(InferenceConfig.model_fields) - set(InferenceSettings.model_fields) == {"warmup"}
    for name in InferenceSettings.model_fields:  # the same range where the pool reads it
        assert InferenceConfig.model_fields[name] is InferenceSettings.model_fields[name] or (
            repr(InferenceConfig.model_fields[name]) == repr(Settings.model_fields[name])
        ), name
