"""Synthetic nursery scenes with ground truth, for tests, benchmarks and model training.

>>> from pipeline.synth import generate_scene
>>> scene = generate_scene(7, 800, 600)
>>> scene.image.shape
(600, 800, 3)
"""

from __future__ import annotations

from pipeline.synth.coco import coco_dict, encode_jpeg, write_coco
from pipeline.synth.scene import generate_scene
from pipeline.synth.types import (
    CONTAINER_CLASSES,
    PLANT_CLASS,
    Box,
    Container,
    Plant,
    Point,
    Scene,
)

__all__ = [
    "CONTAINER_CLASSES",
    "PLANT_CLASS",
    "Box",
    "Container",
    "Plant",
    "Point",
    "Scene",
    "coco_dict",
    "encode_jpeg",
    "generate_scene",
    "write_coco",
]
