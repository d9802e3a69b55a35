"""Where the CPU of an upload goes: a py-spy profile of one ``arq workers.io.WorkerSettings``
process while ``PipelineClient.upload_many`` keeps it busy (S3 stub at 50 ms), at 64 KiB and at
4 MiB, with the CPU of every process an upload touches (producer, Redis, worker, S3 stub).

    python -m bench.io_profile [--sizes 65536,4194304] [--out bench/IO_PROFILE.md]

Needs py-spy (in the ``dev`` extra). Per size, one table gives the CPU per upload of each
process over the profiled round; another splits the worker's samples by the package where the
CPU was spent: the S3 SDK and HTTP (what any uploader pays) against plantpipe's own work, arq's
bookkeeping, the Redis client and the event loop. At 4 MiB, the single steps of one upload
(hashing, a copy, the trip through Redis) are timed on their own as well.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from redis.asyncio import Redis

from bench.harness import BENCH_DIR, Harness, settings_for
from pipeline import PipelineClient, UploadItem
from pipeline.settings import Settings

#: objects per round: about ten seconds of load at each size on the 2-core machine
OBJECTS: Final = {64 * 1024: 4000, 4 * 1024 * 1024: 400}

# (label, path fragments): each sample goes to the first group whose fragment its innermost
# frame's file contains (the frame where the CPU was spent), so asyncio tasks do not matter
GROUPS: Final = (
    ("S3 SDK: aiobotocore / botocore (endpoint rules, signing, serialising)", ("botocore/",)),
    ("HTTP: aiohttp, yarl, multidict", ("aiohttp/", "yarl/", "multidict/")),
    ("Redis client: redis-py, hiredis", ("redis/", "hiredis")),
    ("arq", ("arq/",)),
    ("plantpipe: workers/, pipeline/", ("workers/", "pipeline/")),
    ("payloads: msgpack, pydantic", ("msgpack", "pydantic")),
    ("logging: structlog", ("structlog/",)),
    ("event loop: asyncio, selectors, ssl, socket", ("asyncio/", "selectors", "ssl", "socket")),
)

OTHER: Final = (
    "standard library and the rest (urllib.parse, email headers, hmac…: mostly on the SDK's behalf)"
)


def summarise(raw: Path) -> tuple[int, list[tuple[str, float]]]:
    """py-spy's raw (collapsed) stacks → (samples, [(group, share of samples)])."""
    counts: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        leaf = stack.split(";")[-1]
        where = leaf.split(" (", 1)[1] if " (" in leaf else leaf
        label = next(
            (label for label, parts in GROUPS if any(part in where for part in parts)), OTHER
        )
        counts[label] += n
    labels = [label for label, _ in GROUPS] + [OTHER]
    return total, [(label, counts[label] / max(1, total)) for label in labels]


@dataclass(frozen=True)
class Round:
    """One size's profiled round."""

    size: int
    objects: int
    rates: list[float]
    samples: int
    shares: list[tuple[str, float]]
    cpu_ms: dict[str, float]  # per upload, by process
    steps_ms: dict[str, float]  # single steps of one upload, timed alone (large sizes)


async def step_costs(settings: Settings, size: int, reps: int = 20) -> dict[str, float]:
    """Milliseconds of each step one upload of ``size`` bytes pays, timed alone: what the
    bytes cost on their way, whatever system carries them."""
    data = os.urandom(size)
    out: dict[str, float] = {}

    def timed(label: str, fn: Callable[[], object]) -> None:
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        out[label] = (time.perf_counter() - t0) * 1000 / reps

    timed(
        "SHA-256 of the payload (client: blob id and x-amz-checksum-sha256; S3 verifies)",
        lambda: hashlib.sha256(data).digest(),
    )
    timed("one copy of the payload into new memory (`bytearray(payload)`)", lambda: bytearray(data))
    redis = Redis.from_url(settings.redis_url)
    key = f"{settings.key_prefix}:ioprof:step"
    try:
        t0 = time.perf_counter()
        for _ in range(reps):
            await redis.set(key, data)
        out["Redis SET of the payload (client → Redis), round trip"] = (
            (time.perf_counter() - t0) * 1000 / reps
        )
        t0 = time.perf_counter()
        for _ in range(reps):
            await redis.get(key)
        out["Redis GET of the payload (Redis → worker), round trip"] = (
            (time.perf_counter() - t0) * 1000 / reps
        )
    finally:
        await redis.delete(key)
        await redis.aclose()
    return out


async def profile_size(h: Harness, spy: str, size: int, tmp: Path) -> Round:
    objects = OBJECTS.get(size, max(100, (256 << 20) // size))
    prefix = h.prefix(f"ioprof{size}")
    await h.stub_latency(50)
    worker = h.arq_worker(f"io-worker-{size}", "workers.io.WorkerSettings", h.env(prefix))
    await h.wait_for_heartbeat(prefix, "io", worker)
    settings = settings_for(h, prefix)
    data = [os.urandom(size) for _ in range(objects)]
    raw = tmp / f"io-{size}.raw"
    cpu_ms: dict[str, float] = {}
    async with PipelineClient(settings) as client:
        rates = []
        for round_ in range(2):  # the first warms up; the second is profiled
            recorder = None
            if round_ == 1:
                recorder = await asyncio.create_subprocess_exec(
                    spy, "record", "-p", str(worker.popen.pid), "-d", "8", "-r", "200",
                    "-f", "raw", "-o", str(raw),
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            cpu0 = (
                time.process_time(),
                await h.redis_cpu_seconds(),
                worker.cpu_seconds(),
                h.stub.cpu_seconds(),
            )
            started = time.perf_counter()
            handles = []
            for i in range(0, objects, settings.io_batch_max):
                batch = [
                    UploadItem(key=f"prof{round_}/{j}", data=data[j], content_type="x/y")
                    for j in range(i, min(i + settings.io_batch_max, objects))
                ]
                handles += await client.upload_many(batch)
            await asyncio.gather(*(handle.wait(timeout=300) for handle in handles))
            rates.append(objects / (time.perf_counter() - started))
            cpu1 = (
                time.process_time(),
                await h.redis_cpu_seconds(),
                worker.cpu_seconds(),
                h.stub.cpu_seconds(),
            )
            names = (
                "producer (PipelineClient.upload_many + handle.wait)",
                "Redis server",
                "io worker",
                "S3 stub (S3's own work)",
            )
            used = zip(names, cpu0, cpu1, strict=True)
            cpu_ms = {n: (b - a) * 1000 / objects for n, a, b in used}
            if recorder is not None:
                await asyncio.wait_for(recorder.wait(), 60)
    h.stop(worker)
    await h.stub_latency(0)
    await h.stub_reset(store=True)
    del data
    samples, shares = summarise(raw)
    steps = await step_costs(settings, size) if size >= 1 << 20 else {}
    return Round(size, objects, rates, samples, shares, cpu_ms, steps)


def label(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"


def render(rounds: Sequence[Round], command: str) -> str:
    lines = [
        "# Where the CPU of an upload goes",
        "",
        f"- Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "- Load: `upload_many` batches of 50, S3 stub at 50 ms, one io process; the first round "
        "warms up, the second is measured and profiled",
        "- CPU per upload: user + sys of each process over the profiled round ÷ objects "
        "(`/proc` for the worker and the stub, `INFO cpu` for Redis, `process_time` for the "
        "producer); py-spy at 200 Hz for 8 s on the worker, each sample counted where the CPU "
        "was spent (the package of the innermost frame)",
        "",
    ]
    for r in rounds:
        total = sum(r.cpu_ms.values())
        lines += [
            f"## {label(r.size)} × {r.objects}",
            "",
            f"{r.rates[1]:.0f} objects/s in the profiled round ({r.rates[0]:.0f} in the warm-up).",
            "",
            "| process | CPU ms per upload | share |",
            "|---|---|---|",
            *(f"| {n} | {ms:.2f} | {ms / total:.0%} |" for n, ms in r.cpu_ms.items()),
            f"| all | {total:.2f} | |",
            "",
            f"The io worker, by package ({r.samples} py-spy samples):",
            "",
            "| where | share of the worker's CPU |",
            "|---|---|",
            *(f"| {where} | {share:.0%} |" for where, share in r.shares),
            "",
        ]
        if r.steps_ms:
            lines += [
                f"Single steps of one {label(r.size)} upload, timed alone (20 times each, mean):",
                "",
                "| step | ms |",
                "|---|---|",
                *(f"| {step} | {ms:.2f} |" for step, ms in r.steps_ms.items()),
                "",
            ]
    return "\n".join(lines)


async def profile(spy: str, sizes: Sequence[int]) -> list[Round]:
    with tempfile.TemporaryDirectory() as tmp:
        async with Harness(quick=False, log_dir=Path(tmp)) as h:
            return [await profile_size(h, spy, size, Path(tmp)) for size in sizes]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.io_profile", description=__doc__)
    parser.add_argument(
        "--sizes", default=",".join(str(s) for s in OBJECTS), help="object sizes in bytes"
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "IO_PROFILE.md")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[dev]' (it is in dev)")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    command = "python -m bench.io_profile" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    text = render(asyncio.run(profile(spy, sizes)), command)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
