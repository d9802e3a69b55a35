"""One photo through segmentation, sliced detection, band estimation and a thumbnail.

``PhotoAnalyzer`` holds the two ONNX sessions and runs in a pool process (see ``pool``).

Steps of ``analyze(data)``:

1. ``decode_image`` (validates, applies the EXIF orientation). All coordinates below are pixels
   of that oriented image.
2. Segmentation on the letterboxed full photo → one segment per container (``regions``:
   overlapping instances resolved, pixels exclusive; the whole photo when none is found).
   Container type from ``CONTAINER_TYPE_BY_CLASS``; an unknown class name maps to
   ``"segment"`` with a warning.
3. Sliced detection (``slicing``): every segment's crop, grown by ``segment_crop_pad``, is
   cut into SAHI slices, those that reach its mask run; with ``count_unassigned``, photo
   areas outside every segment get slices of their own. All slices go through the detection
   model together, in device batches (``det_batch_size``), each letterboxed to the
   detection input. A box cut by an internal slice edge that the neighbour slice holds
   whole is dropped (``whole_elsewhere``). With ``rescale_slices``, a measuring pass over a
   quarter of each region's slices measures the plants first (``detection``,
   ``pipeline.vision.scale``): a region whose median plant lies above ``rescale_max_px`` of
   the detector input is detected in larger slices resized down (one box per plant instead
   of several), one below ``rescale_min_px`` also in smaller slices (an alternative weighed
   in step 5), one with both zone by zone. Detections are kept for the segment whose mask
   holds their centre (at most one) and merged per segment with GREEDYNMM; those in no
   segment are merged the same way (``segment_index`` None).
4. Plant colours (``colours``, with ``plant_colours``): the colours under the detections'
   centres against each container's floor. A detection with plant colours under less than
   ``min_plant_support`` of its centre (a lit wall crossing, an empty cell, a pot rim,
   gravel) is not counted.
5. Band estimation per segment (``counting``), with the plant-area fallback; vegetation is
   what those colours call plant (any foliage colour), plus green that is not one of the
   floor's common colours. A region with an alternative pass (small plants in smaller
   slices) keeps the pass that counts more plants, detected + estimated.
6. Thumbnail of the oriented photo.

``AnalysisOutput`` stays small: the only mask sent is the counted vegetation as one 1-bit PNG
(``vegetation_png``); the cpu side renders from the original bytes, ``PhotoAnalysis``
(polygons, boxes) and that PNG, without estimating anything again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.inference.colours import learn_photo_colours
from pipeline.inference.config import InferenceConfig
from pipeline.inference.counting import detections_of, estimate_regions, weigh_alternatives
from pipeline.inference.detection import SlicedDetector
from pipeline.inference.onnx_sessions import YoloModel
from pipeline.inference.outputs import AnalysisOutput
from pipeline.inference.regions import segments_and_regions
from pipeline.inference.slicing import (
    Region,
    RegionDetections,
)
from pipeline.inference.yolo import (
    SegInstance,
    decode_segment,
    letterbox_into,
)
from pipeline.vision import bands, plant_colours
from pipeline.vision.bands import BandParams
from pipeline.vision.colour import colour_warning
from pipeline.vision.decode import decode_image
from pipeline.vision.render import make_thumbnail, vegetation_overlay_png
from pipeline.vision.types import (
    CONTAINER_TYPE_BY_CLASS,
    ContainerType,
    PhotoAnalysis,
    Segment,
)

logger = logging.getLogger("pipeline.inference")

__all__ = ["AnalysisOutput", "PhotoAnalyzer"]


class PhotoAnalyzer:
    """Segmentation + sliced detection + band estimation for one photo at a time."""

    def __init__(self, seg: YoloModel | None, det: YoloModel, config: InferenceConfig) -> None:
        if (seg is not None and seg.spec.kind != "segment") or det.spec.kind != "detect":
            raise ValueError("PhotoAnalyzer needs a segment model and a detect model")
        self.seg = seg
        self.det = det
        self.config = config
        self.detector = SlicedDetector(det, config)
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
        plant_colours.warmup()

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

    def segments_and_regions(
        self, instances: Sequence[SegInstance], width: int, height: int
    ) -> tuple[list[Segment], list[Region]]:
        """``Segment`` models and detection regions, one per container (see ``regions``)."""
        names = self.seg.spec.class_names if self.seg is not None else []
        return segments_and_regions(
            instances, names, self.container_type, self.config, width, height
        )

    # ---------------------------------------------------------------- detection

    def detect_sliced(
        self, rgb: NDArray[np.uint8], regions: Sequence[Region], *, batched: bool = True
    ) -> tuple[list[RegionDetections], int]:
        """Sliced detection over all regions (``SlicedDetector.detect_sliced``)."""
        return self.detector.detect_sliced(rgb, regions, batched=batched)

    def detect_sliced_one_at_a_time(
        self, rgb: NDArray[np.uint8], regions: Sequence[Region]
    ) -> tuple[list[RegionDetections], int]:
        """Same as ``detect_sliced`` with one slice per device call (benchmark baseline)."""
        return self.detector.detect_sliced(rgb, regions, batched=False)

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

        image = decode_image(data, max_pixels=self.config.max_pixels)
        rgb = np.ascontiguousarray(image.rgb)
        height, width = rgb.shape[:2]
        lap("decode")
        colour_note = colour_warning(rgb)  # grayscale / colour cast: counts may be unreliable

        segments, regions = self.segments_and_regions(self.segment(rgb), width, height)
        lap("segment")

        result = self.detector.detect(rgb, regions, batched=batched)
        n_slices = result.slices
        per_region = result.found[: len(regions)]
        unassigned = result.found[len(regions)] if len(result.found) > len(regions) else None
        alternatives = dict(result.alternatives)
        lap("detect")

        colours = None
        if self.config.plant_colours:
            # what the detections say is plant colour: vegetation of any foliage colour, and
            # no count for a box that holds none (a wall crossing, an empty cell, gravel)
            colours = learn_photo_colours(rgb, regions, per_region, self.config.min_plant_support)
            per_region = [
                found.subset(colours.supported(r, found.boxes, rgb))
                for r, found in enumerate(per_region)
            ]
            alternatives = {
                r: found.subset(colours.supported(r, found.boxes, rgb))
                for r, found in alternatives.items()
            }
            if unassigned is not None:
                unassigned = unassigned.subset(colours.supported(None, unassigned.boxes, rgb))
        photo_boxes = [found.boxes for found in per_region]
        if unassigned is not None:
            photo_boxes.append(unassigned.boxes)
        fallback = self.config.plant_area_fallback
        estimated = estimate_regions(
            rgb,
            regions,
            per_region,
            photo_boxes,
            self.band_params,
            fallback=fallback,
            colours=colours,
        )
        weigh_alternatives(
            rgb,
            regions,
            per_region,
            alternatives,
            estimated,
            photo_boxes,
            self.band_params,
            fallback=fallback,
            colours=colours,
        )
        estimations, counted = estimated
        owners: list[tuple[int | None, RegionDetections]] = [
            (region.segment_index, found) for region, found in zip(regions, per_region, strict=True)
        ]
        if unassigned is not None:
            owners.append((None, unassigned))
        detections = detections_of(owners, self.det.spec.class_names)
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
