"""Drawing a photo's visualization for ``render_photo``: the pure render, and running it in a
thread within a slot and a budget."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from pipeline.errors import PermanentError
from pipeline.settings import Settings
from pipeline.vision.decode import decode_preview
from pipeline.vision.render import draw_analysis, encode_avif, make_thumbnail, overlay_alpha
from pipeline.vision.types import PhotoAnalysis


def render_outputs(
    data: bytes, analysis: PhotoAnalysis, settings: Settings, vegetation_png: bytes = b""
) -> tuple[bytes, bytes]:
    """Pure: original bytes + analysis (+ the counted vegetation's 1-bit PNG) → (AVIF
    visualization, processed JPEG thumbnail). The picture is drawn at most
    ``visualization_max_px`` on its longest side, from a JPEG decoded at a reduced scale."""
    picture = decode_preview(data, settings.visualization_max_px, max_pixels=settings.max_pixels)
    overlay = overlay_alpha(vegetation_png, picture.size)
    draw_analysis(picture, analysis, overlay=overlay)
    avif = encode_avif(
        picture,
        quality=settings.avif_quality,
        speed=settings.avif_speed,
        max_threads=settings.avif_threads or None,
    )
    thumb = make_thumbnail(
        picture, longest_side=settings.thumbnail_px, quality=settings.thumbnail_quality
    )
    return avif, thumb


async def render_in_slot(
    slots: asyncio.Semaphore, budget_s: float, render: Callable[[], tuple[bytes, bytes]]
) -> tuple[bytes, bytes]:
    """Run ``render`` in a thread once a render slot is free; ``budget_s`` counts from then
    (the work, not the wait). A render past its budget raises ``PermanentError``
    (``render_timeout``): the same drawing would only time out again. Its thread cannot be
    stopped, so its slot stays taken until it really ends — a slow render never lets more
    renders pile onto the cores than there are slots."""
    await slots.acquire()
    started = time.monotonic()
    work = asyncio.ensure_future(asyncio.to_thread(render))
    work.add_done_callback(lambda _: slots.release())
    try:
        return await asyncio.wait_for(asyncio.shield(work), budget_s)
    except TimeoutError as exc:
        raise PermanentError(
            f"drawing the visualization took longer than its budget of {budget_s:.1f} s "
            f"(stopped waiting after {time.monotonic() - started:.1f} s); raise "
            "PLANTPIPE_CPU_JOB_TIMEOUT_S or lower PLANTPIPE_VISUALIZATION_MAX_PX",
            code="render_timeout",
        ) from exc
