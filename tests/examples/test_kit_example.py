import io

import pytest
from PIL import Image, ImageDraw

from pipeline import PipelineClient

pytestmark = pytest.mark.asyncio


def nursery_photo() -> bytes:
    """Brown soil with rows of green plants, as a JPEG."""
    image = Image.new("RGB", (800, 600), (120, 85, 55))
    draw = ImageDraw.Draw(image)
    for row in range(4):
        for col in range(6):
            x, y = 70 + col * 120, 80 + row * 130
            draw.ellipse((x - 30, y - 30, x + 30, y + 30), fill=(60, 150, 50))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


async def test_a_photo_goes_through_the_pipeline(plantpipe_client: PipelineClient) -> None:
    session_id = await plantpipe_client.submit([nursery_photo()], {"test": "kit"})
    record = await plantpipe_client.wait(session_id, timeout=120, artifacts=True)
    assert record.status == "completed"
    assert record.artifacts_ready  # every image and results.json is in the bucket
    result = await plantpipe_client.result(session_id)
    assert result.photos[0].status == "done"
    assert result.photos[0].warnings == []  # a colour photo: no caveat


async def test_a_bad_photo_is_refused_before_anything_is_stored(
    plantpipe_client: PipelineClient,
) -> None:
    with pytest.raises(ValueError, match="not a JPEG, PNG or WebP"):
        await plantpipe_client.submit([b"hello, not a photo"])
