"""One photo through segmentation, sliced detection, band estimation and a thumbnail.

``PhotoAnalyzer`` holds the two ONNX sessions and runs in a pool process (see ``pool``).

Steps of ``analyze(data)``:

1. ``decode_image`` (validates, applies the EXIF orientation). All coordinates below are pixels
   of that oriented image.
2. Segmentation on the letterboxed full photo → segments (container type from
   ``CONTAINER_TYPE_BY_CLASS``; an unknown class name maps to ``"segment"`` with a warning).
   Instances are resolved to one segment per container first (``resolve_segments``):
   masks overlapping by ``segment_merge_overlap`` of the smaller one are united (class and
   score of the best), and the pixels of touching containers go to the better-scored one, so
   every pixel belongs to at most one segment. **No segment found** → the whole photo
   becomes one segment (class ``"segment"``, type ``"segment"``, confidence 0.0 marking it
   as synthesised, full mask, the photo rectangle as polygon), so plants are still detected
   and estimated.
3. Every segment's bbox crop is cut into SAHI slices (``slice_grid``); with
   ``count_unassigned``, photo areas outside every segment crop get slices of their own
   (a slice of the photo's grid at least ``unassigned_slice_fraction`` outside every crop).
   All slices of the photo go through the detection model together, in device batches
   (``det_batch_size``, or the model's fixed batch). Each slice is letterboxed to the detection
   input; a crop smaller than a slice is one slice, predicted whole. A box cut by an internal
   slice edge that the neighbour slice holds whole is dropped (``whole_elsewhere``,
   ``slice_edge_margin_px``). Detections are mapped back to photo pixels, kept for the
   segment whose mask holds their centre (at most one), and merged per segment with GREEDYNMM
   (IOS ``merge_ios``, class-aware). With ``count_unassigned``, detections whose centre lies in
   no segment are merged the same way and reported with ``segment_index`` None.
4. Band estimation per segment in segment-local coordinates (the bbox crop, its mask, boxes
   shifted to the crop). With ``plant_area_fallback``, a band with too few detections to
   calibrate uses the plant area calibrated on the segment's detections, else on the photo's,
   and only then ``default_plant_area_px`` (2500 px² made phantom plants of 11 000-px² ones).
5. Thumbnail of the oriented photo.

``AnalysisOutput`` stays small: the only mask sent is the counted vegetation as one 1-bit PNG
(``vegetation_png``); the cpu side renders from the original bytes, ``PhotoAnalysis``
(polygons, boxes) and that PNG, without estimating anything again.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.inference.config import InferenceConfig
from pipeline.inference.outputs import AnalysisOutput
from pipeline.inference.runtime import YoloModel
from pipeline.inference.yolo import (
    BoolArray,
    FloatArray,
    IntArray,
    LetterboxInfo,
    SegInstance,
    decode_detect,
    decode_segment,
    letterbox_into,
    mask_polygon,
)
from pipeline.vision import bands
from pipeline.vision.bands import BandParams, calibrated_plant_area, estimate_segment_and_mask
from pipeline.vision.colour import colour_warning
from pipeline.vision.decode import decode_image
from pipeline.vision.merge import greedy_nmm
from pipeline.vision.render import make_thumbnail, vegetation_overlay_png
from pipeline.vision.segments import MaskInstance, ResolvedSegment, resolve_segments
from pipeline.vision.tiling import (
    SliceCell,
    slice_boxes,
    slice_grid,
    uncovered_area,
    whole_elsewhere,
)
from pipeline.vision.types import (
    CONTAINER_TYPE_BY_CLASS,
    ContainerType,
    Detection,
    PhotoAnalysis,
    Segment,
    SegmentEstimation,
)

logger = logging.getLogger("pipeline.inference")

WHOLE_PHOTO_CLASS = "segment"

__all__ = ["AnalysisOutput", "PhotoAnalyzer", "Region", "RegionDetections", "SliceJob"]


@dataclass(frozen=True, slots=True)
class Region:
    """A segment's crop: integer photo-pixel box and its crop-local boolean mask.

    ``det_box`` (photo pixels ``x0, y0, x1, y1``), when set, is the larger box the detection
    slices cover: the crop grown by ``segment_crop_pad``, so plants just outside an
    imprecise mask are still seen (and counted where their centre lies).
    """

    segment_index: int
    x0: int
    y0: int
    mask: BoolArray
    det_box: tuple[int, int, int, int] | None = None

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    @property
    def height(self) -> int:
        return int(self.mask.shape[0])

    @property
    def detection_box(self) -> tuple[int, int, int, int]:
        if self.det_box is not None:
            return self.det_box
        return (self.x0, self.y0, self.x0 + self.width, self.y0 + self.height)


@dataclass(frozen=True, slots=True)
class SliceJob:
    """One detection input: a slice of a region, in photo pixels.

    ``region`` is the index of the region, or ``UNASSIGNED`` (-1) for a slice over photo
    areas outside every segment crop. ``cell`` (photo pixels) says where the neighbour slices
    of the same region begin and end; None: no neighbour holds anything whole.
    """

    region: int
    x0: int
    y0: int
    x1: int
    y1: int
    cell: SliceCell | None = None


UNASSIGNED = -1


def _shift_cell(cell: SliceCell, dx: int, dy: int) -> SliceCell:
    def add(v: int | None, d: int) -> int | None:
        return None if v is None else v + d

    x1, y1, x2, y2 = cell.box
    return SliceCell(
        (x1 + dx, y1 + dy, x2 + dx, y2 + dy),
        add(cell.prev_x_end, dx),
        add(cell.next_x_start, dx),
        add(cell.prev_y_end, dy),
        add(cell.next_y_start, dy),
    )


@dataclass(frozen=True, slots=True)
class RegionDetections:
    """Merged detections of one region, photo pixels, best first."""

    boxes: FloatArray
    scores: FloatArray
    classes: IntArray


def _centres_in(boxes: FloatArray, region: Region) -> BoolArray:
    """Whether each box's centre pixel lies inside the region's mask."""
    cx = np.floor((boxes[:, 0] + boxes[:, 2]) / 2).astype(np.int64) - region.x0
    cy = np.floor((boxes[:, 1] + boxes[:, 3]) / 2).astype(np.int64) - region.y0
    inside = (cx >= 0) & (cx < region.width) & (cy >= 0) & (cy < region.height)
    inside[inside] = region.mask[cy[inside], cx[inside]]
    result: BoolArray = inside
    return result


def _concatenated(
    raw: Sequence[tuple[FloatArray, FloatArray, IntArray]],
) -> tuple[FloatArray, FloatArray, IntArray, IntArray]:
    """Boxes, scores and classes of every slice in ``raw`` as one set each, and the index of
    the slice each box came from."""
    boxes = np.concatenate([r[0] for r in raw], axis=0)
    scores = np.concatenate([r[1] for r in raw], axis=0)
    classes = np.concatenate([r[2] for r in raw], axis=0)
    return boxes, scores, classes, _slice_ids(raw)


def _slice_ids(raw: Sequence[tuple[FloatArray, FloatArray, IntArray]]) -> IntArray:
    """For the concatenated boxes of ``raw``, the index of the slice each came from."""
    ids: IntArray = np.repeat(np.arange(len(raw), dtype=np.int64), [len(r[0]) for r in raw])
    return ids


def _plant_area(boxes: Sequence[FloatArray], params: BandParams) -> float | None:
    """The calibrated plant area (IQR-filtered mean box area) of these detections, or None
    when they are too few to calibrate (see ``calibrated_plant_area``)."""
    b = np.concatenate([np.asarray(x, np.float64).reshape(-1, 4) for x in boxes], axis=0)
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    area, calibrated = calibrated_plant_area(areas, params)
    return area if calibrated else None


def _empty_detections() -> RegionDetections:
    return RegionDetections(
        np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    )


class PhotoAnalyzer:
    """Segmentation + sliced detection + band estimation for one photo at a time."""

    def __init__(self, seg: YoloModel | None, det: YoloModel, config: InferenceConfig) -> None:
        if (seg is not None and seg.spec.kind != "segment") or det.spec.kind != "detect":
            raise ValueError("PhotoAnalyzer needs a segment model and a detect model")
        self.seg = seg
        self.det = det
        self.config = config
        self.band_params = BandParams(
            bands=config.bands,
            default_plant_area_px=config.default_plant_area_px,
            min_calibration_detections=config.min_calibration_detections,
            plant_area_factor=config.plant_area_factor,
        )
        self._warned_classes: set[str] = set()

    @classmethod
    def load(cls, config: InferenceConfig, *, device_id: int = 0) -> PhotoAnalyzer:
        """Create both sessions (on ``device_id`` when CUDA is used)."""
        seg_path, det_path = config.check_models()
        common: dict[str, Any] = {
            "providers": config.providers,
            "device_id": device_id,
            "intra_op_threads": config.intra_op_threads,
        }
        seg = None
        if seg_path is None:
            logger.warning(
                "no segmentation model (none configured, none bundled): every photo is "
                "analysed as one segment; set PLANTPIPE_SEG_MODEL_PATH for containers"
            )
        else:
            seg = YoloModel.load(
                seg_path,
                kind="segment",
                class_names=config.seg_class_names,
                input_size=config.seg_input_size,
                **common,
            )
        det = YoloModel.load(
            det_path,
            kind="detect",
            class_names=config.det_class_names,
            input_size=config.det_input_size,
            **common,
        )
        return cls(seg, det, config)

    @property
    def provider(self) -> str:
        if self.seg is None or self.seg.provider == self.det.provider:
            return self.det.provider
        return f"seg:{self.seg.provider},det:{self.det.provider}"

    def warmup(self) -> None:
        """One dummy inference per model and the band-estimation kernels compiled, so the
        first photo is not slow."""
        if self.seg is not None:
            self.seg.warmup()
        self.det.warmup()
        bands.warmup()

    # ---------------------------------------------------------------- segmentation

    def segment(self, rgb: NDArray[np.uint8]) -> list[SegInstance]:
        """Segmentation instances of the photo (source pixels), best first."""
        if self.seg is None:
            return []
        h, w = rgb.shape[:2]
        batch = self.seg.new_batch(1)
        info = letterbox_into(batch[0], rgb)
        outs = self.seg.run(batch)
        output0 = next(o for o in outs if o.ndim == 3)
        protos = next(o for o in outs if o.ndim == 4)
        return decode_segment(
            output0[0],
            protos[0],
            self.config.seg_conf,
            self.config.seg_iou,
            info,
            w,
            h,
            input_size=self.seg.spec.input_size,
            nc=self.seg.spec.nc,
        )

    def container_type(self, class_name: str) -> ContainerType:
        ctype = CONTAINER_TYPE_BY_CLASS.get(class_name)
        if ctype is None:
            if class_name not in self._warned_classes:
                self._warned_classes.add(class_name)
                logger.warning(
                    "segmentation class %r has no container type; treating it as 'segment'",
                    class_name,
                )
            return "segment"
        return ctype

    def _class_name(self, names: Sequence[str], class_id: int) -> str:
        return names[class_id] if 0 <= class_id < len(names) else f"class{class_id}"

    def segments_and_regions(
        self, instances: Sequence[SegInstance], width: int, height: int
    ) -> tuple[list[Segment], list[Region]]:
        """``Segment`` models and detection regions, one per container (overlapping
        instances resolved, pixels exclusive); the whole photo if nothing was found."""
        segments: list[Segment] = []
        regions: list[Region] = []
        masks = [
            MaskInstance(i.score, i.class_id, i.origin_x, i.origin_y, i.mask) for i in instances
        ]
        threshold = self.config.segment_merge_overlap
        if threshold is None:  # the original pipeline's: every instance a segment of its own
            resolved = [
                ResolvedSegment(k, (k,), m.score, m.class_id, m.x0, m.y0, m.mask, False)
                for k, m in enumerate(masks)
                if m.mask.any()
            ]
        else:
            resolved = resolve_segments(masks, threshold=threshold)
        for res in resolved:
            inst = instances[res.source]
            index = len(segments)
            names = self.seg.spec.class_names if self.seg is not None else []
            name = self._class_name(names, inst.class_id)
            if res.changed:
                h, w = res.mask.shape
                bbox = (float(res.x0), float(res.y0), float(res.x0 + w), float(res.y0 + h))
                polygon = mask_polygon(res.mask, res.x0, res.y0)
            else:
                # not rounded: floor/ceil of it must give the crop used here
                bbox, polygon = inst.box, inst.polygon
            segments.append(
                Segment(
                    index=index,
                    class_name=name,
                    container_type=self.container_type(name),
                    confidence=round(inst.score, 4),
                    bbox=bbox,
                    polygon=polygon,
                    area_px=res.area_px,
                )
            )
            mh, mw = res.mask.shape
            pad = round(self.config.segment_crop_pad * max(width, height))
            det_box = (
                max(0, res.x0 - pad),
                max(0, res.y0 - pad),
                min(width, res.x0 + mw + pad),
                min(height, res.y0 + mh + pad),
            )
            regions.append(Region(index, res.x0, res.y0, res.mask, det_box if pad else None))
        if not segments:
            w, h = float(width), float(height)
            segments.append(
                Segment(
                    index=0,
                    class_name=WHOLE_PHOTO_CLASS,
                    container_type="segment",
                    confidence=0.0,
                    bbox=(0.0, 0.0, w, h),
                    polygon=[(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)],
                    area_px=width * height,
                )
            )
            regions.append(Region(0, 0, 0, np.ones((height, width), dtype=bool)))
        return segments, regions

    # ---------------------------------------------------------------- detection

    def slice_jobs(
        self, regions: Sequence[Region], width: int = 0, height: int = 0
    ) -> list[SliceJob]:
        """Every slice of every region, in photo pixels; with ``count_unassigned`` and the
        photo size given, then the slices over photo areas outside every region's crop."""
        jobs: list[SliceJob] = []
        for r, region in enumerate(regions):
            bx0, by0, bx1, by1 = region.detection_box
            cells = slice_grid(
                bx1 - bx0,
                by1 - by0,
                self.config.slice_size,
                self.config.slice_overlap,
            )
            for cell in cells:
                sx1, sy1, sx2, sy2 = cell.box
                jobs.append(
                    SliceJob(
                        r,
                        bx0 + int(sx1),
                        by0 + int(sy1),
                        bx0 + int(sx2),
                        by0 + int(sy2),
                        _shift_cell(cell, bx0, by0),
                    )
                )
        if self.config.count_unassigned and width > 0 and height > 0 and regions:
            for x1, y1, x2, y2 in self.uncovered_slices(regions, width, height):
                jobs.append(SliceJob(UNASSIGNED, x1, y1, x2, y2))
        return jobs

    def uncovered_slices(
        self, regions: Sequence[Region], width: int, height: int
    ) -> list[tuple[int, int, int, int]]:
        """Slices of the photo's grid at least ``unassigned_slice_fraction`` outside every
        region's crop (photo areas no region slice looks at)."""
        fraction = self.config.unassigned_slice_fraction
        if fraction >= 1.0:
            return []
        covers = [region.detection_box for region in regions]
        out: list[tuple[int, int, int, int]] = []
        for x1, y1, x2, y2 in slice_boxes(
            width, height, self.config.slice_size, self.config.slice_overlap
        ):
            free = uncovered_area((x1, y1, x2, y2), covers)
            if free > 0 and free >= fraction * (x2 - x1) * (y2 - y1):
                out.append((x1, y1, x2, y2))
        return out

    def detect_slices(
        self, rgb: NDArray[np.uint8], jobs: Sequence[SliceJob], *, batched: bool = True
    ) -> list[tuple[FloatArray, FloatArray, IntArray]]:
        """Raw per-slice detections (photo pixels, after per-slice NMS), one entry per job.

        ``batched=True`` sends ``det_batch_size`` slices (or the model's fixed batch) per
        device call; ``batched=False`` sends them one at a time (padded to a fixed batch).
        Both give the same detections.
        """
        step = self.det.batch_size(self.config.det_batch_size) if batched else 1
        results: list[tuple[FloatArray, FloatArray, IntArray]] = []
        for start in range(0, len(jobs), step):
            chunk = jobs[start : start + step]
            batch = self.det.new_batch(len(chunk))
            infos: list[LetterboxInfo] = []
            for i, job in enumerate(chunk):
                infos.append(letterbox_into(batch[i], rgb[job.y0 : job.y1, job.x0 : job.x1]))
            (out, *_) = self.det.run(batch)
            for i, job in enumerate(chunk):
                boxes, scores, classes = decode_detect(
                    out[i],
                    self.config.det_conf,
                    self.config.det_iou,
                    infos[i],
                    job.x1 - job.x0,
                    job.y1 - job.y0,
                    nc=self.det.spec.nc,
                )
                boxes[:, [0, 2]] += job.x0
                boxes[:, [1, 3]] += job.y0
                margin = self.config.slice_edge_margin_px
                if job.cell is not None and margin is not None and boxes.shape[0]:
                    keep = ~whole_elsewhere(boxes, job.cell, margin=margin)
                    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
                results.append((boxes, scores, classes))
        return results

    def merge_region(
        self,
        region: Region,
        raw: Sequence[tuple[FloatArray, FloatArray, IntArray]],
    ) -> RegionDetections:
        """Keep detections centred inside the region's mask, then GREEDYNMM (IOS, per class)."""
        if not raw:
            return _empty_detections()
        boxes, scores, classes, slices = _concatenated(raw)
        if boxes.shape[0] == 0:
            return _empty_detections()
        inside = _centres_in(boxes, region)
        if not inside.any():
            return _empty_detections()
        return self._merge(boxes[inside], scores[inside], classes[inside], slices[inside])

    def merge_unassigned(
        self,
        regions: Sequence[Region],
        raw: Sequence[tuple[FloatArray, FloatArray, IntArray]],
    ) -> RegionDetections:
        """Detections of any slice whose centre lies in no region's mask, merged."""
        if not raw:
            return _empty_detections()
        boxes, scores, classes, slices = _concatenated(raw)
        outside = np.ones(boxes.shape[0], dtype=bool)
        for region in regions:
            outside &= ~_centres_in(boxes, region)
        if not outside.any():
            return _empty_detections()
        return self._merge(boxes[outside], scores[outside], classes[outside], slices[outside])

    def _merge(
        self, boxes: FloatArray, scores: FloatArray, classes: IntArray, slices: IntArray
    ) -> RegionDetections:
        mb, ms, mc = greedy_nmm(
            boxes,
            scores,
            classes,
            threshold=self.config.merge_ios,
            metric="ios",
            class_agnostic=False,
            groups=None if self.config.merge_within_slice else slices,
            large=(
                None
                if self.config.merge_large_px is None
                else (self.config.merge_large_px, self.config.merge_ios_large)
            ),
        )
        return RegionDetections(
            np.asarray(mb, dtype=np.float32).reshape(-1, 4),
            np.asarray(ms, dtype=np.float32).reshape(-1),
            np.asarray(mc, dtype=np.int64).reshape(-1),
        )

    def detect_sliced(
        self, rgb: NDArray[np.uint8], regions: Sequence[Region], *, batched: bool = True
    ) -> tuple[list[RegionDetections], int]:
        """Sliced detection over all regions; returns (per-region detections, slice count).

        With ``count_unassigned`` the list has one more entry, last: the detections whose
        centre lies in no region (from every slice, including those over uncovered areas).
        """
        height, width = rgb.shape[:2]
        jobs = self.slice_jobs(regions, width, height)
        raw = self.detect_slices(rgb, jobs, batched=batched)
        per_region: list[list[tuple[FloatArray, FloatArray, IntArray]]] = [[] for _ in regions]
        for job, res in zip(jobs, raw, strict=True):
            if job.region != UNASSIGNED:
                per_region[job.region].append(res)
        merged = [self.merge_region(reg, per_region[i]) for i, reg in enumerate(regions)]
        if self.config.count_unassigned:
            merged.append(self.merge_unassigned(regions, raw))
        return merged, len(jobs)

    def detect_sliced_one_at_a_time(
        self, rgb: NDArray[np.uint8], regions: Sequence[Region]
    ) -> tuple[list[RegionDetections], int]:
        """Same as ``detect_sliced`` with one slice per device call (benchmark baseline)."""
        return self.detect_sliced(rgb, regions, batched=False)

    # ---------------------------------------------------------------- the photo

    def analyze(self, data: bytes, *, batched: bool = True) -> AnalysisOutput:
        """Analyse one encoded photo (JPEG/PNG/WebP bytes). Raises ``InvalidImage``."""
        timings: dict[str, float] = {}
        t_start = t = time.perf_counter()
        cpu_start = cpu = time.process_time()  # this process, every thread (ONNX Runtime's too)
        cpu_ms: dict[str, float] = {}

        def lap(name: str) -> None:
            nonlocal t, cpu
            now, now_cpu = time.perf_counter(), time.process_time()
            timings[name] = round((now - t) * 1000.0, 3)
            cpu_ms[name] = (now_cpu - cpu) * 1000.0
            t, cpu = now, now_cpu

        if self.config.max_pixels is not None:
            image = decode_image(data, max_pixels=self.config.max_pixels)
        else:
            image = decode_image(data)
        rgb = np.ascontiguousarray(image.rgb)
        height, width = rgb.shape[:2]
        lap("decode")
        colour_note = colour_warning(rgb)  # grayscale / colour cast: counts may be unreliable

        segments, regions = self.segments_and_regions(self.segment(rgb), width, height)
        lap("segment")

        per_region, n_slices = self.detect_sliced(rgb, regions, batched=batched)
        unassigned = per_region[len(regions)] if len(per_region) > len(regions) else None
        per_region = per_region[: len(regions)]
        det_names = self.det.spec.class_names
        detections: list[Detection] = []
        owners: list[tuple[int | None, RegionDetections]] = [
            (region.segment_index, found) for region, found in zip(regions, per_region, strict=True)
        ]
        if unassigned is not None:
            owners.append((None, unassigned))
        for owner, found in owners:
            for box, score, cls in zip(found.boxes, found.scores, found.classes, strict=True):
                x1, y1, x2, y2 = (float(v) for v in box)
                detections.append(
                    Detection(
                        cx=round((x1 + x2) / 2, 2),
                        cy=round((y1 + y2) / 2, 2),
                        w=round(x2 - x1, 2),
                        h=round(y2 - y1, 2),
                        confidence=round(float(score), 4),
                        class_id=int(cls),
                        class_name=self._class_name(det_names, int(cls)),
                        segment_index=owner,
                    )
                )
        lap("detect")

        estimations: list[SegmentEstimation] = []
        counted: list[tuple[int, int, BoolArray]] = []
        photo_area = _plant_area([found.boxes for _, found in owners], self.band_params)
        for region, found in zip(regions, per_region, strict=True):
            crop = rgb[region.y0 : region.y0 + region.height, region.x0 : region.x0 + region.width]
            local = found.boxes.copy()
            local[:, [0, 2]] -= region.x0
            local[:, [1, 3]] -= region.y0
            params = self.band_params
            if self.config.plant_area_fallback:
                # a band with too few detections of its own falls back to the plant area
                # measured on the segment's detections, else the photo's, before the default
                fallback = _plant_area([found.boxes], params) or photo_area
                if fallback is not None:
                    params = dataclasses.replace(params, default_plant_area_px=fallback)
            estimation, vegetation = estimate_segment_and_mask(
                crop, region.mask, local, region.segment_index, params
            )
            estimations.append(estimation)
            counted.append((region.x0, region.y0, vegetation))
        lap("estimate")
        # the renderer draws this instead of estimating the bands all over again
        vegetation_png = vegetation_overlay_png(counted, width, height)
        lap("overlay")

        thumb = make_thumbnail(
            rgb, longest_side=self.config.thumbnail_px, quality=self.config.thumbnail_quality
        )
        lap("thumbnail")
        timings["total"] = round((time.perf_counter() - t_start) * 1000.0, 3)
        # CPU time of the model stages and of the whole analysis (for the non-inference share)
        timings["inference_cpu"] = round(cpu_ms["segment"] + cpu_ms["detect"], 3)
        timings["total_cpu"] = round((time.process_time() - cpu_start) * 1000.0, 3)

        analysis = PhotoAnalysis(
            width=width,
            height=height,
            segments=segments,
            detections=detections,
            estimations=estimations,
            provider=self.provider,
            timings_ms=timings,
            warnings=[colour_note] if colour_note else [],
        )
        return AnalysisOutput(
            analysis=analysis,
            thumbnail_jpeg=thumb,
            vegetation_png=vegetation_png,
            mime=image.mime,
            orig_width=image.orig_width,
            orig_height=image.orig_height,
            exif_orientation=image.exif_orientation,
            slices=n_slices,
        )
