"""One evaluation photo and its truth: generated, or read back from a scene cache.

Generating a 12 MP condition scene costs about as much as analysing it; ``--cache DIR`` keeps
each generated photo (the JPEG bytes the analyzer reads) and its truth in one ``.npz`` per
scene, so a second evaluation of the same sets (another model, another setting) analyses the
very same bytes without drawing them again. Photos are kept per version of the generator's
source (``generator_version``): a changed generator never reads stale photos back. No
pickle: plain arrays only.
"""

from __future__ import annotations

import functools
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from pipeline import synth
from pipeline.synth import Scene, generate_scene
from pipeline.synth.scene import Variant

__all__ = ["PhotoTruth", "cache_path", "encode", "generator_version", "photo_truth"]


def encode(scene: Scene, quality: int | None = None) -> bytes:
    """JPEG bytes of the scene, at its own ``jpeg_quality`` (90 when it has none)."""
    q = quality if quality is not None else (scene.jpeg_quality or 90)
    buf = io.BytesIO()
    Image.fromarray(scene.image).save(buf, format="JPEG", quality=q)
    return buf.getvalue()


@dataclass(frozen=True)
class PhotoTruth:
    """The photo's JPEG bytes and, per plant, its box, visibility and foliage group; the
    boxes of empty cells and pots."""

    jpeg: bytes
    boxes: NDArray[np.float64]
    visibility: NDArray[np.float64]
    foliage: tuple[str, ...]
    empty: NDArray[np.float64]

    @classmethod
    def of(cls, scene: Scene) -> PhotoTruth:
        return cls(
            encode(scene),
            np.array([p.box for p in scene.plants], dtype=np.float64).reshape(-1, 4),
            np.array([p.visibility for p in scene.plants], dtype=np.float64),
            tuple(p.foliage for p in scene.plants),
            np.array(scene.empty_cells, dtype=np.float64).reshape(-1, 4),
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            jpeg=np.frombuffer(self.jpeg, dtype=np.uint8),
            boxes=self.boxes,
            visibility=self.visibility,
            foliage=np.array(self.foliage, dtype=np.str_),
            empty=self.empty,
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> PhotoTruth:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                data["jpeg"].tobytes(),
                data["boxes"].astype(np.float64).reshape(-1, 4),
                data["visibility"].astype(np.float64),
                tuple(str(f) for f in data["foliage"]),
                data["empty"].astype(np.float64).reshape(-1, 4),
            )


@functools.cache
def generator_version() -> str:
    """A digest of the scene generator's source: cached photos of another version of
    ``pipeline.synth`` (other pixels, other truth) are never read back."""
    digest = hashlib.sha256()
    for path in sorted(Path(synth.__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def cache_path(cache: Path, seed: int, width: int, height: int, variant: Variant) -> Path:
    """Where ``cache`` keeps one scene (a folder per generator version)."""
    return cache / f"synth-{generator_version()}" / f"{variant}-{width}x{height}-{seed}.npz"


def photo_truth(
    seed: int, width: int, height: int, variant: Variant, cache: Path | None = None
) -> PhotoTruth:
    """The scene of ``seed`` as an evaluation photo, from ``cache`` when it holds it."""
    path = None if cache is None else cache_path(cache, seed, width, height, variant)
    if path is not None and path.is_file():
        return PhotoTruth.load(path)
    truth = PhotoTruth.of(generate_scene(seed, width, height, variant=variant))
    if path is not None:
        truth.save(path)
    return truth
