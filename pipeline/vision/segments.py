"""Container segments resolved to one instance per container, each pixel in one segment. Pure.

A segmentation model (the bundled one, or a user's YOLO-seg export) can return the same tray
two or three times under different classes (``segmento`` 0.41 and ``plug`` 0.32 over one
tray): class-aware NMS does not suppress boxes of different classes. Each of those instances
would be detected and counted on its own, so every plant in the overlap counted once per
instance. :func:`resolve_segments` fixes that before detection:

1. instances are visited best score first; an instance whose mask overlaps an already kept
   container by at least ``threshold`` of the *smaller* mask (intersection over smaller) —
   or by mask IoU ≥ ``threshold`` with ``metric="iou"`` — is merged into it: the masks are
   united, the container keeps the class and score of its best instance (it was kept first);
2. then pixels claimed by two remaining containers (an overlap below the threshold: touching
   trays) go to the better-scored one, so each pixel belongs to at most one segment and a
   detection, kept by its centre pixel, to at most one segment;
3. a container left with fewer than ``min_area_px`` pixels is dropped; each mask is cropped
   to its own bounding box again.

Masks are placed crops: ``mask[r, c]`` is photo pixel ``(x0 + c, y0 + r)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from pipeline.vision.tiling import mask_bounds

__all__ = ["MaskInstance", "ResolvedSegment", "mask_overlap", "resolve_segments"]

BoolArray = NDArray[np.bool_]
OverlapMetric = Literal["ios", "iou"]


@dataclass(frozen=True, slots=True)
class MaskInstance:
    """One segmentation instance: score, class and its mask placed at ``(x0, y0)``."""

    score: float
    class_id: int
    x0: int
    y0: int
    mask: BoolArray


@dataclass(frozen=True, slots=True)
class ResolvedSegment:
    """One container after :func:`resolve_segments`.

    ``source`` is the index (into the input) of the instance that gave class and score;
    ``merged`` the indices of every instance united into it (``source`` first); ``changed``
    is False when the mask is exactly the source instance's (same crop, same pixels).
    """

    source: int
    merged: tuple[int, ...]
    score: float
    class_id: int
    x0: int
    y0: int
    mask: BoolArray
    changed: bool

    @property
    def area_px(self) -> int:
        return int(np.count_nonzero(self.mask))


def _window(
    ax: int, ay: int, am: BoolArray, bx: int, by: int, bm: BoolArray
) -> tuple[BoolArray, BoolArray] | None:
    """The parts of two placed masks over their bounding boxes' intersection (or None)."""
    x0, y0 = max(ax, bx), max(ay, by)
    x1 = min(ax + am.shape[1], bx + bm.shape[1])
    y1 = min(ay + am.shape[0], by + bm.shape[0])
    if x1 <= x0 or y1 <= y0:
        return None
    return (
        am[y0 - ay : y1 - ay, x0 - ax : x1 - ax],
        bm[y0 - by : y1 - by, x0 - bx : x1 - bx],
    )


def mask_overlap(
    a: tuple[int, int, BoolArray],
    b: tuple[int, int, BoolArray],
    metric: OverlapMetric = "ios",
) -> float:
    """Overlap of two placed masks ``(x0, y0, mask)``: intersection over the smaller mask's
    area (``"ios"``) or over their union (``"iou"``); 0 when either is empty."""
    if metric not in ("ios", "iou"):
        raise ValueError(f"metric must be 'ios' or 'iou', got {metric!r}")
    area_a = int(np.count_nonzero(a[2]))
    area_b = int(np.count_nonzero(b[2]))
    if area_a == 0 or area_b == 0:
        return 0.0
    win = _window(a[0], a[1], a[2], b[0], b[1], b[2])
    if win is None:
        return 0.0
    inter = int(np.count_nonzero(win[0] & win[1]))
    denom = min(area_a, area_b) if metric == "ios" else area_a + area_b - inter
    return inter / denom


def _union(
    ax: int, ay: int, am: BoolArray, bx: int, by: int, bm: BoolArray
) -> tuple[int, int, BoolArray]:
    x0, y0 = min(ax, bx), min(ay, by)
    x1 = max(ax + am.shape[1], bx + bm.shape[1])
    y1 = max(ay + am.shape[0], by + bm.shape[0])
    out = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    out[ay - y0 : ay - y0 + am.shape[0], ax - x0 : ax - x0 + am.shape[1]] |= am
    out[by - y0 : by - y0 + bm.shape[0], bx - x0 : bx - x0 + bm.shape[1]] |= bm
    return x0, y0, out


def _tight(x0: int, y0: int, mask: BoolArray) -> tuple[int, int, BoolArray]:
    """The mask cropped to its own bounding box (an empty mask stays as it is)."""
    bounds = mask_bounds(mask)
    if bounds is None:
        return x0, y0, mask
    c0, r0, c1, r1 = bounds
    return x0 + c0, y0 + r0, np.ascontiguousarray(mask[r0:r1, c0:c1])


@dataclass(slots=True)
class _Group:
    members: list[int]
    x0: int
    y0: int
    mask: BoolArray
    changed: bool


def resolve_segments(
    instances: Sequence[MaskInstance],
    *,
    threshold: float = 0.3,
    metric: OverlapMetric = "ios",
    min_area_px: int = 1,
) -> list[ResolvedSegment]:
    """One segment per container, pixels exclusive (see the module docstring).

    Output is best score first (ties in input order). ``threshold`` > 1 disables merging
    (pixels are still made exclusive).
    """
    if metric not in ("ios", "iou"):
        raise ValueError(f"metric must be 'ios' or 'iou', got {metric!r}")
    order = sorted(range(len(instances)), key=lambda i: (-float(instances[i].score), i))
    groups: list[_Group] = []
    for i in order:
        inst = instances[i]
        mask = np.asarray(inst.mask, dtype=bool)
        if not mask.any():
            continue
        best, best_overlap = -1, 0.0
        for g, group in enumerate(groups):
            ov = mask_overlap((group.x0, group.y0, group.mask), (inst.x0, inst.y0, mask), metric)
            if ov > best_overlap:
                best, best_overlap = g, ov
        if best >= 0 and best_overlap >= threshold:
            group = groups[best]
            group.x0, group.y0, group.mask = _union(
                group.x0, group.y0, group.mask, inst.x0, inst.y0, mask
            )
            group.members.append(i)
            group.changed = True
        else:
            groups.append(_Group([i], inst.x0, inst.y0, mask.copy(), False))

    out: list[ResolvedSegment] = []
    for g, group in enumerate(groups):
        mask = group.mask
        changed = group.changed
        for better in groups[:g]:
            win = _window(group.x0, group.y0, mask, better.x0, better.y0, better.mask)
            if win is None:
                continue
            claimed = win[0] & win[1]
            if claimed.any():
                if not changed:
                    mask = mask.copy()
                    changed = True
                    win = _window(group.x0, group.y0, mask, better.x0, better.y0, better.mask)
                    assert win is not None
                win[0][claimed] = False
        x0, y0 = group.x0, group.y0
        if changed:
            x0, y0, mask = _tight(x0, y0, mask)
        if int(np.count_nonzero(mask)) < max(1, min_area_px):
            continue
        source = group.members[0]
        out.append(
            ResolvedSegment(
                source=source,
                merged=tuple(group.members),
                score=float(instances[source].score),
                class_id=int(instances[source].class_id),
                x0=x0,
                y0=y0,
                mask=mask,
                changed=changed,
            )
        )
    return out
