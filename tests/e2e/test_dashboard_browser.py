"""The dashboard in a real browser (Playwright driving Debian's Chromium, no browser download)
against real io/cpu/gpu worker processes (the bundled models), Redis, LocalStack and
``plantpipe dashboard`` itself as a child process.

The screenshot in the README is made here: ``PLANTPIPE_DASHBOARD_SCREENSHOT=docs/dashboard.png``
writes it there (by default it goes to the test's temporary folder and is only checked)."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aioboto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from PIL import Image

from pipeline.client import PipelineClient
from pipeline.embedded import drop_prefix
from pipeline.testing.kit import remove_bucket
from tests.conftest import REPO, settings_env
from tests.e2e.conftest import Cluster, cluster_settings

# workers start, two sessions go through the bundled models: more than pytest's default 600 s
# on a loaded 2-core machine
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

CHROMIUM = os.environ.get("PLANTPIPE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SAMPLE = REPO / "pipeline" / "samples" / "nursery.jpg"
EVIL = "<img src=x onerror=alert(1)>"
TOKEN = "e2e-dashboard-token-0123456789"
WAIT_MS = 600_000  # a session through the bundled models, on a loaded 2-core machine
STEP_MS = 120_000  # any other wait (a page, an image, a live row)
SCREENSHOT_MAX = 200 * 1024


class DashboardProcess:
    """``python -m pipeline.cli dashboard --port 0`` with the cluster's settings."""

    def __init__(self, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "dashboard", "--port", "0"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._seen = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("dashboard: http"):
                self._seen.set()

    def url(self, timeout: float = 240) -> str:
        if not self._seen.wait(timeout):
            raise RuntimeError("the dashboard did not start:\n" + "\n".join(self.lines[-30:]))
        line = next(x for x in self.lines if x.startswith("dashboard: http"))
        found = re.search(r"http://\S+/", line)
        assert found is not None, line
        return found.group(0)

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


@pytest.fixture(scope="module")
async def cluster(fixture_models: Any, localstack: str) -> AsyncIterator[Cluster]:
    """io, cpu and gpu worker processes with the bundled models (real counts on the sample)."""
    bundled = {
        "seg_model_path": None,
        "det_model_path": None,
        "seg_input_size": 1024,
        "det_input_size": 512,
    }
    # a 2000x1500 photo through the bundled models takes seconds, more on a loaded machine
    slow = {"gpu_job_timeout_s": 300, "cpu_job_timeout_s": 120, "session_deadline_s": 1800}
    settings = cluster_settings(fixture_models, **bundled, **slow)
    running = Cluster(settings)
    try:
        await running.start("io", "cpu", "gpu")
        yield running
    finally:
        running.stop_all()
        await drop_prefix(settings.redis_url, settings.key_prefix)
        await remove_bucket(settings)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Debian's Chromium under Playwright; fails (never skips) when it is not installed."""
    from playwright.async_api import async_playwright

    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - once, before the browser starts
        pytest.fail(
            f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (scripts/test "
            "does) or set PLANTPIPE_TEST_CHROMIUM",
            pytrace=False,
        )
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


def dashboard(cluster: Cluster, **env: str) -> DashboardProcess:
    return DashboardProcess({**settings_env(cluster.settings), **env})


async def new_page(browser: Any, dialogs: list[str]) -> Any:
    page = await browser.new_page(viewport={"width": 1200, "height": 860})
    page.set_default_timeout(STEP_MS)  # generous: CI machines are shared and slow
    page.on("dialog", lambda d: (dialogs.append(d.message), asyncio.ensure_future(d.dismiss())))
    page.on("pageerror", lambda e: dialogs.append(f"page error: {e}"))
    return page


async def drop(page: Any, data: bytes, name: str) -> None:
    """Drop a file on the upload page's drop zone, as a browser delivers a dragged file."""
    await page.evaluate(
        """([b64, name]) => {
          const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
          const transfer = new DataTransfer();
          transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
          const zone = document.querySelector("#dropzone");
          for (const type of ["dragenter", "dragover", "drop"]) {
            zone.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true,
              dataTransfer: transfer }));
          }
        }""",
        [base64.b64encode(data).decode(), name],
    )


async def seen(locator: Any, page: Any, server: DashboardProcess, timeout: float) -> None:
    """``locator.wait_for``; on a timeout, what the page and the server showed instead."""
    try:
        await locator.wait_for(timeout=timeout)
    except Exception as exc:
        text = await page.locator("main").inner_text()
        toasts = await page.locator("#toasts").inner_text()
        raise AssertionError(
            f"{exc}\n--- page {page.url}:\n{text[:1500]}\n--- toasts: {toasts}\n--- server:\n"
            + "\n".join(server.lines[-15:])
        ) from None


async def loaded(image: Any) -> bool:
    return bool(await image.evaluate("(img) => img.complete && img.naturalWidth > 0"))


def small_png(raw: bytes) -> bytes:
    """The screenshot as a palette PNG (a README image should be small)."""
    image = Image.open(io.BytesIO(raw)).convert("RGB")
    buf = io.BytesIO()
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(
        buf, format="PNG", optimize=True
    )
    return buf.getvalue()


async def test_a_dropped_photo_is_counted_live(
    cluster: Cluster, browser: Any, tmp_path: Path
) -> None:
    server = dashboard(cluster)
    dialogs: list[str] = []
    try:
        base = await asyncio.to_thread(server.url)
        listing = await new_page(browser, dialogs)
        await listing.goto(base)
        await listing.get_by_text("No sessions yet").wait_for()
        await listing.locator("#live.on").wait_for()

        page = await new_page(browser, dialogs)
        await page.goto(base + "upload")
        await page.fill("#metadata", "bench=A-12\ngrower=Ana")
        await drop(page, SAMPLE.read_bytes(), "bench-A12.jpg")
        await page.wait_for_url(re.compile(r"/sessions/[0-9a-f]{32}$"), timeout=STEP_MS)
        session_id = page.url.rsplit("/", 1)[1]
        await page.evaluate("() => { window.stayed = 'no reload'; }")
        status = page.locator("#session-status .pill")
        await seen(status.filter(has_text="completed"), page, server, WAIT_MS)
        assert await page.evaluate("() => window.stayed") == "no reload"  # the same document

        async with PipelineClient(cluster.settings) as client:
            record = await client.wait(session_id, timeout=WAIT_MS / 1000, artifacts=True)
            result = await client.result(session_id)
        assert record.status == "completed" and result.total_detected > 0
        plants = f"{result.total_detected + result.total_estimated:,}"
        stat = page.locator(".stats .stat.big .value")
        await stat.filter(has_text=plants).wait_for(timeout=STEP_MS)
        card = page.locator("article.photo").first
        for caption in ("photo", "plants found"):
            image = card.locator("figure.picture", has_text=caption).locator("img")
            await image.wait_for(timeout=STEP_MS)
            await page.wait_for_function("(img) => img.complete", arg=await image.element_handle())
            assert await loaded(image), caption
        await card.locator("figure.picture", has_text="plants found").locator("button").click()
        full = page.locator("dialog.lightbox[open] img")
        await page.wait_for_function(
            "(img) => img.complete && img.naturalWidth > 0",
            arg=await full.element_handle(),
            timeout=STEP_MS,
        )
        assert await full.evaluate("(img) => img.naturalWidth") > 1000  # processed.avif
        await page.locator("dialog.lightbox button.close").click()

        # the list that was open before the upload shows the session, without a reload
        row = listing.locator(f'tr[data-id="{session_id}"]')
        await row.wait_for(timeout=STEP_MS)
        await row.locator(".pill", has_text="completed").wait_for(timeout=STEP_MS)
        assert (await row.locator("td.plants").inner_text()).strip() == plants

        await page.reload()
        await status.filter(has_text="completed").wait_for()
        await page.wait_for_load_state("networkidle")
        png = small_png(await page.screenshot(full_page=False))
        assert len(png) < SCREENSHOT_MAX, len(png)
        target = Path(os.environ.get("PLANTPIPE_DASHBOARD_SCREENSHOT") or tmp_path / "shot.png")
        await asyncio.to_thread(target.write_bytes, png)

        # user strings (metadata, file names) are text: shown as typed, never run
        await page.goto(base + "upload")
        await page.fill("#metadata", f"note={EVIL}")
        await drop(page, SAMPLE.read_bytes(), f"{EVIL}.jpg")
        await page.wait_for_url(re.compile(r"/sessions/[0-9a-f]{32}$"), timeout=STEP_MS)
        evil_id = page.url.rsplit("/", 1)[1]
        evil_cell = page.locator("table.metadata td", has_text=EVIL)
        await evil_cell.first.wait_for(timeout=STEP_MS)  # the page fills it from the API
        assert await evil_cell.count() == 1
        await page.locator("article.photo h3", has_text=f"{EVIL}.jpg").wait_for()
        evil_row = listing.locator(f'tr[data-id="{evil_id}"]')
        await evil_row.wait_for(timeout=STEP_MS)  # arrived live in the open list
        evil_chips = evil_row.locator(".chip", has_text=EVIL)
        await evil_chips.nth(1).wait_for(timeout=STEP_MS)
        assert await evil_chips.count() == 2  # name, note
        for view in (page, listing):
            assert await view.locator('img[src="x"]').count() == 0
            markup = await view.evaluate("() => document.body.innerHTML")
            assert '<img src="x"' not in markup and "&lt;img src=x" in markup
        assert dialogs == []
        async with PipelineClient(cluster.settings) as client:  # nothing left in flight
            await client.wait(evil_id, timeout=WAIT_MS / 1000, artifacts=True)
    finally:
        assert server.stop() == 0, "\n".join(server.lines[-20:])
    assert "dashboard stopped" in "\n".join(server.lines)


def s3(settings: Any) -> Any:
    return aioboto3.Session().client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


async def stored(settings: Any, key: str, timeout: float = STEP_MS / 1000) -> bool:
    deadline = time.monotonic() + timeout
    async with s3(settings) as client:
        while time.monotonic() < deadline:
            try:
                await client.head_object(Bucket=settings.s3_bucket, Key=key)
                return True
            except ClientError:
                await asyncio.sleep(0.25)
    return False


async def test_dead_letters_are_retried_from_the_page_with_the_token(
    cluster: Cluster, browser: Any
) -> None:
    settings = cluster.settings
    async with s3(settings) as client:  # the cause: the bucket is gone
        listed = await client.list_objects_v2(Bucket=settings.s3_bucket)
        for obj in listed.get("Contents", []):
            await client.delete_object(Bucket=settings.s3_bucket, Key=obj["Key"])
        await client.delete_bucket(Bucket=settings.s3_bucket)
    async with PipelineClient(settings) as pipeline:
        sid = await pipeline.submit([SAMPLE.read_bytes()], {"bench": "D-4"})
        record = await pipeline.wait(sid, timeout=WAIT_MS / 1000, artifacts=True)
        letters = await pipeline.failed()
    assert record.artifacts_failed == len(letters) == 5
    async with s3(settings) as client:  # the fix
        await client.create_bucket(Bucket=settings.s3_bucket)

    server = dashboard(cluster, PLANTPIPE_DASHBOARD_TOKEN=TOKEN)
    dialogs: list[str] = []
    try:
        base = await asyncio.to_thread(server.url)
        page = await new_page(browser, dialogs)
        await page.goto(base + "dead-letters")
        first_key = f"{sid}/original.jpg"
        row = page.locator(f'table.letters tr:has(td.target[title="{first_key}"])')

        async def confirm_and_token(button: Any, token: str) -> None:
            await button.click()
            await page.locator(
                "dialog.confirm[open] button.primary, dialog.confirm[open] button.danger"
            ).click()
            await page.locator("dialog.token[open] input").fill(token)
            await page.locator("dialog.token[open] button.primary").click()

        # without the token the page is refused: nothing is replayed
        await confirm_and_token(row.get_by_role("button", name="Retry"), "not-the-token-at-all")
        await page.locator(".toast.error", has_text="wrong dashboard token").wait_for()
        assert await row.count() == 1
        refused = await page.evaluate(
            """async () => (await fetch("api/dead-letters/retry-all", { method: "POST" }))
                 .status"""
        )
        assert refused == 403
        assert not await stored(settings, first_key, timeout=2)

        # with it, the upload lands in S3
        await confirm_and_token(row.get_by_role("button", name="Retry"), TOKEN)
        await page.locator(".toast.ok", has_text="Queued again").wait_for()
        assert await stored(settings, first_key)
        await row.wait_for(state="detached")

        # discard one (confirmed, no token asked again), then retry all the others
        results = page.locator(f'table.letters tr:has(td.target[title="{sid}/results.json"])')
        await results.get_by_role("button", name="Discard").click()
        await page.locator("dialog.confirm[open] button.danger").click()
        await results.wait_for(state="detached")
        await page.get_by_role("button", name=re.compile(r"Retry all \(3\)")).click()
        await page.locator("dialog.confirm[open] button.primary").click()
        await page.get_by_text("Nothing failed for good").wait_for(timeout=STEP_MS)
        for name in ("thumbnail_original.jpg", "processed.avif", "thumbnail_processed.jpg"):
            assert await stored(settings, f"{sid}/{name}"), name
        assert not await stored(settings, f"{sid}/results.json", timeout=2)  # discarded
        audit = page.locator("table.audit")
        for action in ("retry", "discard", "retry-all"):
            await audit.locator("td", has_text=re.compile(f"^{action}$")).first.wait_for()
        assert dialogs == []
    finally:
        assert server.stop() == 0, "\n".join(server.lines[-20:])
    log = "\n".join(server.lines)
    assert '"event": "dashboard.action"' in log and '"action": "discard"' in log
