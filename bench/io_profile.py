"""Where an io worker's CPU goes: a py-spy profile of one ``arq workers.io.WorkerSettings``
process while ``PipelineClient.upload_many`` keeps it busy (64 KiB objects, S3 stub at 50 ms).

    python -m bench.io_profile [--objects 4000] [--size 65536] [--out bench/IO_PROFILE.md]

Needs py-spy (in the ``dev`` extra). The table splits the worker's samples by the package where the
CPU was spent: the S3 SDK and HTTP (what any uploader pays) against plantpipe's own work, arq's
bookkeeping, the Redis client and the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from bench.harness import BENCH_DIR, Harness, settings_for
from pipeline import PipelineClient, UploadItem

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


async def profile(spy: str, objects: int, size: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        async with Harness(quick=False, log_dir=Path(tmp)) as h:
            prefix = h.prefix("ioprof")
            await h.stub_latency(50)
            worker = h.arq_worker("io-worker", "workers.io.WorkerSettings", h.env(prefix))
            await h.wait_for_heartbeat(prefix, "io", worker)
            settings = settings_for(h, prefix)
            data = [os.urandom(size) for _ in range(objects)]
            raw = Path(tmp) / "io.raw"
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
                    if recorder is not None:
                        await asyncio.wait_for(recorder.wait(), 60)
            h.stop(worker)
            samples, shares = summarise(raw)
    lines = [
        "# Where an io worker's CPU goes",
        "",
        f"- Command: `python -m bench.io_profile --objects {objects} --size {size}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        f"- Load: `upload_many` batches of 50 × {size // 1024} KiB objects, S3 stub at 50 ms, "
        f"one io process; {rates[1]:.0f} objects/s in the profiled round "
        f"({rates[0]:.0f} in the warm-up)",
        f"- py-spy at 200 Hz for 8 s: {samples} samples of the worker process, each counted "
        "where the CPU was spent (the package of the innermost frame)",
        "",
        "| where | share of the worker's CPU |",
        "|---|---|",
        *(f"| {label} | {share:.0%} |" for label, share in shares),
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.io_profile", description=__doc__)
    parser.add_argument("--objects", type=int, default=4000)
    parser.add_argument("--size", type=int, default=64 * 1024)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "IO_PROFILE.md")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[dev]' (it is in dev)")
    text = asyncio.run(profile(spy, args.objects, args.size))
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
