"""A new output through the registry alone (``pipeline.vision.outputs.PHOTO_OUTPUTS``): drawn by
``render_photo``, uploaded by the io role, listed in results.json and — when it says so —
counted toward the session's ``artifacts_ready``. Real Redis, LocalStack and workers (in this
process, so the registration made here is the one they read)."""

from __future__ import annotations

import io
import json
from typing import Any

import aioboto3
import pytest
from botocore.config import Config
from PIL import Image

from pipeline.client import PipelineClient, UploadHandle
from pipeline.settings import Settings
from pipeline.testing import running_workers
from pipeline.testing.onnx_fixtures import encode_png, make_nursery_photo
from pipeline.vision.outputs import PHOTO_OUTPUTS, PhotoOutput
from tests.conftest import SettingsFactory

pytestmark = pytest.mark.integration


def draw_edges(picture: Image.Image, settings: Settings) -> bytes:
    """The toy output: the visualization as a small grey PNG."""
    small = picture.convert("L").resize((64, 48))
    buf = io.BytesIO()
    small.save(buf, format="PNG")
    return buf.getvalue()


async def read_object(settings: Settings, key: str) -> tuple[bytes, str]:
    config = Config(s3={"addressing_style": "path"})
    session: Any = aioboto3.Session()
    async with session.client(
        "s3", endpoint_url=settings.s3_endpoint_url, region_name="us-east-1", config=config
    ) as s3:
        resp = await s3.get_object(Bucket=settings.s3_bucket, Key=key)
        return await resp["Body"].read(), resp["ContentType"]


@pytest.mark.parametrize("counted", [True, False], ids=["counted", "not-counted"])
async def test_a_toy_output_added_through_the_registry_alone(
    make_settings: SettingsFactory, localstack: str, counted: bool
) -> None:
    settings = make_settings()
    toy = PhotoOutput(
        "edges", "edges.png", "image/png", "render", draw_edges, counts_toward_readiness=counted
    )
    photo = make_nursery_photo(640, 480, ((30, 40, 300, 440), (340, 40, 610, 440)), seed=3)
    with PHOTO_OUTPUTS.added(toy):
        async with running_workers(settings), PipelineClient(settings) as client:
            sid = await client.submit([encode_png(photo.rgb)])
            record = await client.wait(sid, timeout=180, artifacts=True)
            assert record.status == "completed", record.reason
            assert record.artifacts_ready and record.artifacts_failed == 0
            result = await client.result(sid)

            # listed in results.json (the stored document, as a reader gets it)
            document, _ = await read_object(settings, result.keys["results"])
            keys = json.loads(document)["photos"][0]["keys"]
            assert keys["edges"] == f"{sid}/edges.png"
            assert set(keys) == set(PHOTO_OUTPUTS.names())

            # counted toward readiness: one of the session's artifacts, which were all
            # uploaded when artifacts_ready flipped — or, when not counted, not among them
            session_artifacts = {a.artifact_id: a.state for a in record.artifacts}
            if counted:
                assert session_artifacts[f"{sid}:0:edges"] == "uploaded"
            else:
                assert f"{sid}:0:edges" not in session_artifacts
                handle = UploadHandle(client, f"{sid}:0:edges", keys["edges"])
                assert (await handle.wait(timeout=60)).state == "uploaded"
            assert len(session_artifacts) == len(PHOTO_OUTPUTS.names()) + 1 - (not counted)

            # rendered and uploaded: the toy's own bytes under its declared content type
            body, content_type = await read_object(settings, keys["edges"])
            assert content_type == "image/png"
            assert Image.open(io.BytesIO(body)).size == (64, 48)
    assert "edges" not in PHOTO_OUTPUTS  # the registry is as it was


def test_the_registry_refuses_what_would_collide_or_cannot_be_made() -> None:
    with pytest.raises(ValueError, match="already registered"):
        PHOTO_OUTPUTS.register(
            PhotoOutput("processed", "other.avif", "image/avif", "render", draw_edges)
        )
    with pytest.raises(ValueError, match="already 'processed'"):
        PHOTO_OUTPUTS.register(
            PhotoOutput("other", "processed.avif", "image/avif", "render", draw_edges)
        )
    with pytest.raises(ValueError, match="renderer is given exactly when"):
        PhotoOutput("other", "other.png", "image/png", "render")
    with pytest.raises(ValueError, match="not a plain name"):
        PhotoOutput("other", "../other.png", "image/png", "render", draw_edges)
    with pytest.raises(KeyError, match="registered: original"):
        PHOTO_OUTPUTS["nothing"]
