"""Ground-truth types of a synthetic nursery scene (pure data, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# Container classes, in the order of the default segmentation model's class indices.
CONTAINER_CLASSES: tuple[str, ...] = ("claro-cajon", "segmento", "cajon", "plug", "almacigo")
PLANT_CLASS = "plant"
LOOSE = -1  # Plant.container of a plant outside every container (a loose pot)

Point = tuple[float, float]
Box = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class Container:
    """A container (tray, box, plug tray, seedbed) as a convex quadrilateral.

    ``polygon`` holds four ``(x, y)`` corners in image pixels, clockwise in image coordinates
    (top-left, top-right, bottom-right, bottom-left of the unrotated container).
    """

    class_name: str
    polygon: tuple[Point, ...]

    @property
    def class_id(self) -> int:
        """Index of ``class_name`` in :data:`CONTAINER_CLASSES`."""
        return CONTAINER_CLASSES.index(self.class_name)

    @property
    def bbox(self) -> Box:
        """``(x1, y1, x2, y2)`` of the polygon."""
        xs = [p[0] for p in self.polygon]
        ys = [p[1] for p in self.polygon]
        return (min(xs), min(ys), max(xs), max(ys))

    @property
    def area(self) -> float:
        """Polygon area (shoelace), in px²."""
        pts = self.polygon
        total = 0.0
        for i, (x0, y0) in enumerate(pts):
            x1, y1 = pts[(i + 1) % len(pts)]
            total += x0 * y1 - x1 * y0
        return abs(total) / 2.0

    def contains(self, x: float, y: float, tol: float = 0.0) -> bool:
        """Whether ``(x, y)`` lies inside the (convex, clockwise) polygon, ``tol`` px slack."""
        pts = self.polygon
        for i, (x0, y0) in enumerate(pts):
            x1, y1 = pts[(i + 1) % len(pts)]
            ex, ey = x1 - x0, y1 - y0
            length = float(np.hypot(ex, ey))
            # Clockwise in image coordinates (y down): the inside is where cross >= 0.
            cross = (ex * (y - y0) - ey * (x - x0)) / max(length, 1e-9)
            if cross < -tol:
                return False
        return True


@dataclass(frozen=True, slots=True)
class Plant:
    """One plant: its full (amodal) box, the index of its container and how much shows.

    ``visibility`` is the fraction of the plant's own pixels that no later-drawn plant covers
    (1.0 = fully visible). ``box`` is ``(x1, y1, x2, y2)`` in image pixels, x2/y2 exclusive.
    ``container`` is -1 (:data:`LOOSE`) for a plant in a loose pot, outside every container;
    ``foliage`` its colour group (``pipeline.synth.foliage``).
    """

    box: Box
    container: int
    visibility: float
    foliage: str = "green"

    @property
    def center(self) -> Point:
        x1, y1, x2, y2 = self.box
        return ((x1 + x2) / 2.0, (y1 + y2) / 2.0)

    @property
    def size(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x2 - x1, y2 - y1)


@dataclass(frozen=True, slots=True)
class Scene:
    """A synthetic photo (``image``: uint8 ``H × W × 3`` RGB) and its ground truth."""

    seed: int
    image: NDArray[np.uint8]
    containers: tuple[Container, ...]
    plants: tuple[Plant, ...]
    jpeg_quality: int | None = None  # the quality to encode it at (None: the caller's choice)
    #: boxes of the empty cells of cell trays and of empty pots (what must not be counted)
    empty_cells: tuple[Box, ...] = ()

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    def plants_in(self, container: int) -> tuple[Plant, ...]:
        """The plants of one container."""
        return tuple(p for p in self.plants if p.container == container)

    def plant_counts(self) -> list[int]:
        """Number of plants per container, in container order (loose plants not counted)."""
        counts = [0] * len(self.containers)
        for p in self.plants:
            if p.container != LOOSE:
                counts[p.container] += 1
        return counts
