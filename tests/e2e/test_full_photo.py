"""A 12 MP JPEG through the real gpu, cpu and io workers with real ONNX models, into S3."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from PIL import Image

from pipeline.inference.config import BUNDLED_DET_MODEL, BUNDLED_SEG_MODEL
from pipeline.testing.onnx_fixtures import make_nursery_photo
from tests.e2e.test_sessions import read_object

pytestmark = pytest.mark.e2e


def photo_4000x3000() -> tuple[bytes, dict[str, Any]]:
    """The bundled models see a synthetic scene; the fixture models a fixture photo."""
    if BUNDLED_DET_MODEL.exists() and BUNDLED_SEG_MODEL.exists():
        from pipeline.synth import generate_scene

        rgb = generate_scene(2024, 4000, 3000).image
        overrides: dict[str, Any] = {
            "seg_model_path": None,
            "det_model_path": None,
            "seg_input_size": 1024,
        }
    else:
        trays = ((150, 150, 1950, 2850), (2050, 150, 3850, 2850))
        rgb = make_nursery_photo(4000, 3000, trays, pitch=96, skip=0.25, seed=3).rgb
        overrides = {}
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue(), overrides


async def test_12mp_jpeg_end_to_end(make_cluster: Any, cleanup_redis: list[str]) -> None:
    data, overrides = photo_4000x3000()
    # the render's defaults (AVIF speed 10, at most 2000 px, 60 s cpu timeout)
    cluster = make_cluster(gpu_job_timeout_s=60, cpu_job_timeout_s=60, **overrides)
    cleanup_redis.append(cluster.settings.key_prefix)
    await cluster.start("io", "cpu", "gpu")
    async with cluster.client() as client:
        sid = await client.submit([data], content_types=["image/jpeg"])
        record = await client.wait(sid, timeout=300, artifacts=True)
        result = await client.result(sid)
    assert record.status == "completed", record.reason
    photo = result.photos[0]
    assert photo.analysis is not None
    assert (photo.width, photo.height) == (4000, 3000)
    assert len(photo.analysis.segments) >= 1
    assert photo.detected > 50
    assert len(photo.analysis.estimations) == len(photo.analysis.segments)
    assert all(len(e.bands) == 4 for e in photo.analysis.estimations)
    assert photo.provider == "CPUExecutionProvider"
    bucket, endpoint = cluster.settings.s3_bucket, cluster.settings.s3_endpoint_url
    avif, ctype = await read_object(endpoint, bucket, f"{sid}/processed.avif")
    assert ctype == "image/avif"
    picture = Image.open(io.BytesIO(avif))
    # drawn at PLANTPIPE_VISUALIZATION_MAX_PX (2000) on the longest side, aspect kept
    assert (picture.format, picture.size) == ("AVIF", (2000, 1500))
    for name in ("thumbnail_original.jpg", "thumbnail_processed.jpg"):
        thumb, ctype = await read_object(endpoint, bucket, f"{sid}/{name}")
        assert ctype == "image/jpeg"
        assert Image.open(io.BytesIO(thumb)).size == (300, 225)
    original, _ = await read_object(endpoint, bucket, f"{sid}/original.jpg")
    assert original == data
    doc = json.loads((await read_object(endpoint, bucket, f"{sid}/results.json"))[0])
    assert doc["total_detected"] == photo.detected
    assert doc["photos"][0]["analysis"]["estimations"][0]["bands"][0]["plant_area_px"] > 0
