"""Abusive and unusual inputs, generated here, through real workers: each gets a clear,
specific error (at ``submit`` when cheap to detect, else a failed photo with its reason); the
valid-but-unusual ones complete; the workers keep serving; memory stays bounded."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from pipeline.client import PipelineClient
from pipeline.errors import PipelineError
from pipeline.state.ids import photo_key
from pipeline.storage.base import InvalidKey
from pipeline.testing.onnx_fixtures import make_nursery_photo
from pipeline.vision.decode import InvalidImage
from tests.faults.conftest import (
    SMALL_TRAYS,
    ClusterFactory,
    Expected,
    FaultReport,
    bucket_objects,
    check_sessions,
    key_pattern,
    scaled,
    small_photo,
    tree_rss_kib,
    worker_pid,
)

pytestmark = pytest.mark.faults

MIB = 1024 * 1024


def encode(image: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 100-byte PNG that declares width × height RGB pixels (30 GB decoded)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    content_type: str | None = None


def upright() -> tuple[Image.Image, int]:
    photo = make_nursery_photo(640, 480, SMALL_TRAYS, skip=0.2, seed=5000)
    return Image.fromarray(photo.rgb), len(photo.squares)


def submit_rejects() -> list[tuple[Case, str]]:
    """Inputs ``submit`` must refuse at once, with the InvalidImage code expected."""
    image, _ = upright()
    frames = [image.resize((64, 48)), Image.new("RGB", (64, 48), (0, 0, 0))]
    png = encode(image, "PNG")
    return [
        (Case("empty file", b""), "empty"),
        (Case("text named .jpg", b"hello, not a photo\n" * 20, "image/jpeg"), "unsupported_type"),
        (Case("HTML as image/png", b"<html><script>alert(1)</script></html>"), "unsupported_type"),
        (Case("BMP", encode(image.resize((64, 48)), "BMP")), "unsupported_type"),
        (Case("TIFF", encode(image.resize((64, 48)), "TIFF")), "unsupported_type"),
        (
            Case("animated GIF", encode(frames[0], "GIF", save_all=True, append_images=frames[1:])),
            "unsupported_type",
        ),
        (Case("> 20 MiB", b"\xff\xd8\xff\xe0" + bytes(20 * MIB + 1)), "too_large"),
        (Case("PNG declared image/jpeg", png, "image/jpeg"), "type_mismatch"),
        (Case("PNG declared ../../etc/passwd", png, "../../etc/passwd"), "type_mismatch"),
    ]


def worker_rejects() -> list[tuple[Case, str]]:
    """Inputs that pass the cheap checks, are refused by submit's full check and, submitted
    with ``decode_check=False``, must fail in the worker with this code."""
    image, _ = upright()
    jpeg = encode(image, "JPEG", quality=90)
    frames = [image.resize((64, 48)), Image.new("RGB", (64, 48), (0, 0, 0))]
    return [
        (Case("truncated JPEG", jpeg[: len(jpeg) // 2]), "truncated"),
        (Case("PNG bomb 100000×100000", png_bomb()), "decompression_bomb"),
        (Case("PNG with a garbage body", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4), "corrupt"),
        (
            Case(
                "animated WebP", encode(frames[0], "WEBP", save_all=True, append_images=frames[1:])
            ),
            "animated",
        ),
    ]


def unusual_but_valid() -> list[tuple[Case, int | None, tuple[int, int]]]:
    """Valid photos in unusual forms: (case, plants expected or None = any, upright size)."""
    image, plants = upright()
    gray = image.convert("L")
    sixteen = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)  # I;16
    rotated = image.rotate(90, expand=True)  # stored sideways …
    exif = rotated.getexif()
    exif[0x0112] = 6  # … and tagged "rotate 90° clockwise to display"
    return [
        (Case("16-bit grayscale PNG", encode(sixteen, "PNG")), None, (640, 480)),
        (Case("CMYK JPEG", encode(image.convert("CMYK"), "JPEG", quality=95)), None, (640, 480)),
        (Case("grayscale PNG", encode(gray, "PNG")), None, (640, 480)),
        (
            Case("EXIF-rotated JPEG", encode(rotated, "JPEG", quality=95, exif=exif.tobytes())),
            plants,
            (640, 480),
        ),
        (Case("RGBA PNG", encode(image.convert("RGBA"), "PNG")), plants, (640, 480)),
        (Case("image/jpg alias", encode(image, "JPEG", quality=95), "image/jpg"), None, (640, 480)),
    ]


HOSTILE_METADATA: list[tuple[str, dict[str, str]]] = [
    ("control characters in a file name", {"filename": "photo\x00.jpg"}),
    ("newline injection", {"filename": "a.jpg\r\nX-Amz-Acl: public-read"}),
    ("value of 1 MiB", {"note": "x" * MIB}),
    ("key of 200 chars", {"k" * 200: "v"}),
    ("empty key", {"": "v"}),
    ("1000 entries", {f"k{i}": "v" for i in range(1000)}),
]

HOSTILE_KEYS = [
    "../../etc/passwd",
    "/absolute/key",
    "a//b",
    "a/./b",
    "sess/../other-session/original.jpg",
    "name with spaces.jpg",
    "ctl\x07char",
    "x" * 2000,
    "",
]


async def test_bad_inputs_fail_clearly_and_workers_keep_serving(
    make_fault_cluster: ClusterFactory, localstack: str, fault_report: FaultReport
) -> None:
    cluster = make_fault_cluster()
    await cluster.start("io", "cpu", "gpu")
    good, good_n = small_photo(5001)
    async with PipelineClient(cluster.settings) as client:
        # warm the pool (first inference allocates arenas), then measure the gpu worker tree
        warm = await client.submit([good])
        await client.wait(warm, timeout=scaled(60))
        gpu_pid = worker_pid(cluster, "gpu")
        rss_before = tree_rss_kib(gpu_pid)

        # 1. cheap checks at submit: InvalidImage with a specific code, nothing stored
        refused: dict[str, str] = {}
        for case, _code in submit_rejects():
            types = [case.content_type] if case.content_type else None
            with pytest.raises(InvalidImage) as info:
                await client.submit(
                    [good, case.data], content_types=[None, *types] if types else None
                )
            refused[case.name] = info.value.code
            assert "photo 1" in info.value.reason, info.value.reason
            fault_report.inputs_tried.append(case.name)
        assert refused == {c.name: code for c, code in submit_rejects()}

        # 2. hostile metadata: ValueError naming the problem; nothing stored
        for name, meta in HOSTILE_METADATA:
            with pytest.raises(ValueError, match="metadata"):
                await client.submit([good], meta)
            fault_report.inputs_tried.append(f"metadata: {name}")
        # 3. hostile object keys for client.upload: refused before anything is queued
        for key in HOSTILE_KEYS:
            with pytest.raises(InvalidKey):
                await client.upload(key, b"x", content_type="text/plain")
        fault_report.inputs_tried.append(f"{len(HOSTILE_KEYS)} hostile upload keys")

        # 4. metadata that looks like a path is stored and echoed, never used to build keys
        traversal = {"filename": "../../../../etc/passwd", "dir": "..\\..\\windows", "x": "%2e%2e/"}
        worker_bad = worker_rejects()
        unusual = unusual_but_valid()
        photos = [c.data for c, _ in worker_bad] + [c.data for c, _, _ in unusual] + [good]
        ctypes = [c.content_type for c, _ in worker_bad] + [c.content_type for c, _, _ in unusual]
        for case, code in worker_bad:  # the full check at submit refuses each one …
            with pytest.raises(InvalidImage) as info:
                await client.submit([case.data], content_types=[case.content_type])
            assert info.value.code == code, (case.name, info.value.reason)
        # … and the workers refuse them on their own (a caller that skipped the decode check)
        mixed = await client.submit(
            photos, traversal, content_types=[*ctypes, None], decode_check=False
        )
        fault_report.inputs_tried += [c.name for c, _ in worker_bad] + [
            c.name for c, _, _ in unusual
        ]
        fault_report.inputs_tried.append("path traversal in metadata")
        record = await client.wait(mixed, timeout=scaled(120), artifacts=True)
        result = await client.result(mixed)

        # 5. the workers keep serving: a good photo after all of that completes
        last = await client.submit([good])
        last_record = await client.wait(last, timeout=scaled(60), artifacts=True)
        rss_after = tree_rss_kib(worker_pid(cluster, "gpu"))
        objects = await bucket_objects(localstack, cluster.settings.s3_bucket)
        expected_counts: list[int | None] = [None] * len(worker_bad)
        done_counts = [p.detected for p in result.photos[len(worker_bad) : -1]]
        check = await check_sessions(
            client,
            [
                Expected(mixed, [*expected_counts, *done_counts, good_n]),
                Expected(last, [good_n]),
                Expected(warm, [good_n]),
            ],
            objects=objects,
            report=fault_report,
        )
        letters = await client.failed()
    for exp_photos in (len(photos), 1, 1):
        fault_report.count_session(exp_photos)

    # worker-detected problems: each photo failed with its own code and a readable reason
    n_bad = len(worker_bad)
    assert record.status == "warning"
    assert record.reason is not None and f"{n_bad} of {len(photos)} photos failed" in record.reason
    got = [(p.state, p.error_code) for p in record.photos[:n_bad]]
    assert got == [("failed", code) for _, code in worker_bad]
    assert all(p.reason and len(p.reason) > 20 for p in record.photos[:n_bad])
    assert [r.error_code for r in result.photos[:n_bad]] == [code for _, code in worker_bad]
    # the unusual-but-valid photos complete, upright
    for (case, plants, size), photo in zip(unusual, result.photos[n_bad:-1], strict=True):
        assert photo.status == "done", f"{case.name}: {photo.error_code} {photo.reason}"
        assert (photo.width, photo.height) == size, case.name
        if plants is not None:
            assert photo.detected == plants, case.name
    assert result.photos[-1].status == "done" and result.photos[-1].detected == good_n
    assert result.metadata == traversal
    assert all(key_pattern(mixed).match(a.key) for a in record.artifacts)
    assert photo_key(mixed, 0, len(photos), "original", "jpg") in {a.key for a in record.artifacts}
    assert last_record.status == "completed"
    assert check.problems() == []
    # bad input is never retried: one dead letter per bad photo, not replayable
    assert sorted((d.error_code, d.attempts, d.replayable) for d in letters) == sorted(
        (code, 1, False) for _, code in worker_bad
    )
    # memory stays bounded (generous: 256 MiB over the warmed-up gpu worker + pool)
    grown = (rss_after - rss_before) / 1024
    fault_report.notes.append(
        f"bad inputs: gpu worker + pool RSS {rss_before / 1024:.0f} → {rss_after / 1024:.0f} MiB"
    )
    assert grown < 256, f"gpu worker tree grew by {grown:.0f} MiB"


def test_pipeline_errors_have_codes() -> None:
    """Errors surfaced to callers carry machine codes (used by the table above)."""
    assert issubclass(InvalidKey, PipelineError) and InvalidKey("x").code == "invalid_key"
