"""COCO export of synthetic scenes (the only module here that writes files)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.synth.types import CONTAINER_CLASSES, PLANT_CLASS, Scene

PLANT_CATEGORY_ID = len(CONTAINER_CLASSES) + 1


def categories() -> list[dict[str, Any]]:
    """COCO categories: the container classes (ids 1..5, model order), then ``plant`` (6)."""
    cats: list[dict[str, Any]] = [
        {"id": i + 1, "name": name, "supercategory": "container"}
        for i, name in enumerate(CONTAINER_CLASSES)
    ]
    cats.append({"id": PLANT_CATEGORY_ID, "name": PLANT_CLASS, "supercategory": "plant"})
    return cats


def image_file_name(scene: Scene) -> str:
    return f"scene_{scene.seed:08d}.jpg"


def encode_jpeg(scene: Scene, quality: int = 92) -> bytes:
    """The scene's image as JPEG bytes (deterministic for a given Pillow build)."""
    buf = io.BytesIO()
    Image.fromarray(scene.image).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def coco_dict(scenes: Sequence[Scene]) -> dict[str, Any]:
    """The COCO document for ``scenes`` (image ids 1..N in order).

    Container annotations carry a polygon ``segmentation``; plant annotations carry
    ``container_id`` (the annotation id of their container) and ``visibility`` (0..1).
    """
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    ann_id = 0
    for image_id, scene in enumerate(scenes, start=1):
        images.append(
            {
                "id": image_id,
                "file_name": image_file_name(scene),
                "width": scene.width,
                "height": scene.height,
                "seed": scene.seed,
            }
        )
        container_ids: list[int] = []
        for c in scene.containers:
            ann_id += 1
            container_ids.append(ann_id)
            x1, y1, x2, y2 = c.bbox
            anns.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": c.class_id + 1,
                    "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                    "area": round(c.area, 2),
                    "segmentation": [[round(v, 2) for p in c.polygon for v in p]],
                    "iscrowd": 0,
                }
            )
        for p in scene.plants:
            ann_id += 1
            x1, y1, x2, y2 = p.box
            anns.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": PLANT_CATEGORY_ID,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                    "container_id": None if p.container < 0 else container_ids[p.container],
                    "foliage": p.foliage,
                    "visibility": p.visibility,
                }
            )
    return {
        "info": {"description": "plantpipe synthetic nursery scenes", "version": "1"},
        "licenses": [],
        "categories": categories(),
        "images": images,
        "annotations": anns,
    }


def write_coco(scenes: Iterable[Scene], out_dir: str | Path, quality: int | None = 92) -> Path:
    """Write each scene as JPEG into ``out_dir`` and ``annotations.json`` next to them
    (``quality`` None: each scene's own ``jpeg_quality``, else 92).

    Returns the path of ``annotations.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kept: list[Scene] = []
    for scene in scenes:
        q = quality if quality is not None else (scene.jpeg_quality or 92)
        (out / image_file_name(scene)).write_bytes(encode_jpeg(scene, q))
        kept.append(scene)
    path = out / "annotations.json"
    path.write_text(json.dumps(coco_dict(kept), indent=1) + "\n", encoding="utf-8")
    return path
