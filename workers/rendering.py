"""Drawing a photo's visualization for ``render_photo``: the pure render, and running it in a
thread within a slot and a budget."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from pipeline.errors import PermanentError
from pipeline.settings import Settings
from pipeline.vision.decode import decode_preview
from pipeline.vision.outputs import PHOTO_OUTPUTS
from pipeline.vision.render import draw_analysis, overlay_alpha
from pipeline.vision.types import PhotoAnalysis

T = TypeVar("T")


def render_outputs(
    data: bytes, analysis: PhotoAnalysis, settings: Settings, vegetation_png: bytes = b""
) -> dict[str, bytes]:
    """Pure: original bytes + analysis (+ the counted vegetation's 1-bit PNG) → every output
    ``render_photo`` makes (:data:`PHOTO_OUTPUTS` ``made_by="render"``: the AVIF visualization,
    the processed JPEG thumbnail, and any registered since), by name, in registry order. The
    picture is drawn once, at most ``visualization_max_px`` on its longest side, from a JPEG
    decoded at a reduced scale; each output is made from that one picture."""
    picture = decode_preview(data, settings.visualization_max_px, max_pixels=settings.max_pixels)
    overlay = overlay_alpha(vegetation_png, picture.size)
    draw_analysis(picture, analysis, overlay=overlay)
    rendered: dict[str, bytes] = {}
    for output in PHOTO_OUTPUTS.made_by("render"):
        assert output.render is not None  # PhotoOutput guarantees it for made_by="render"
        rendered[output.name] = output.render(picture, settings)
    return rendered


async def render_in_slot(slots: asyncio.Semaphore, budget_s: float, render: Callable[[], T]) -> T:
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
