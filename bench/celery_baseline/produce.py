"""Producer side of the Celery baseline; prints one JSON line with its measurements.

    python -m bench.celery_baseline.produce io --count 1000 --size 65536 --key-prefix K
    python -m bench.celery_baseline.produce chord --children 100 --reps 5
    python -m bench.celery_baseline.produce ensure-bucket

``io``: one rep of N uploads through ``bench.upload`` (the bytes ride in the task arguments,
JSON-encoded by kombu as base64, like the original's ``file_bytes`` argument); time from the
first ``apply_async`` to the group's result (``GroupResult.get``, native join on Redis).
``chord``: submit → chord body latency for N no-op children, ``reps`` times (one warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
import uuid
from typing import Any

from celery import chord, group

from bench.celery_baseline.tasks import QUEUE, app, collect, ensure_bucket, noop, upload


def payloads(count: int, size: int) -> list[bytes]:
    """Distinct random payloads (as plantpipe's benchmark uses)."""
    if size <= 256 * 1024:
        return [os.urandom(size) for _ in range(count)]
    base = os.urandom(size)
    return [i.to_bytes(8, "big") + base[8:] for i in range(count)]


def run_io(count: int, size: int, key_prefix: str, timeout: float) -> dict[str, Any]:
    data = payloads(count, size)
    cpu0, t0 = time.process_time(), time.perf_counter()
    result: Any = group(
        upload.s(f"{key_prefix}/{i}", data[i], "application/octet-stream") for i in range(count)
    ).apply_async()
    done = result.get(timeout=timeout, propagate=True)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    result.forget()
    if len(done) != count or any(d["size"] != size for d in done):
        raise SystemExit(f"celery io: {len(done)} of {count} uploads reported")
    return {"wall_s": wall, "producer_cpu_s": cpu, "count": count}


def run_chord(children: int, reps: int, timeout: float) -> dict[str, Any]:
    client = app.backend.client
    latencies: list[float] = []
    for rep in range(reps + 1):  # rep 0 warms up
        done_key = f"{QUEUE}:done:{uuid.uuid4().hex}"
        time.sleep(random.uniform(0, 0.1))  # as plantpipe's driver does before each rep
        t0 = time.time()
        chord(noop.s(i) for i in range(children))(collect.s(done_key))
        item = client.blpop([done_key], timeout=timeout)
        if item is None:
            raise SystemExit(f"celery chord of {children}: no callback within {timeout} s")
        client.delete(done_key)
        if rep:
            latencies.append(float(item[1]) - t0)
    return {"children": children, "latencies_s": latencies}


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    io = sub.add_parser("io")
    io.add_argument("--count", type=int, required=True)
    io.add_argument("--size", type=int, required=True)
    io.add_argument("--key-prefix", required=True)
    io.add_argument("--timeout", type=float, default=300)
    ch = sub.add_parser("chord")
    ch.add_argument("--children", type=int, required=True)
    ch.add_argument("--reps", type=int, default=5)
    ch.add_argument("--timeout", type=float, default=120)
    sub.add_parser("ensure-bucket")
    args = parser.parse_args()
    if args.cmd == "io":
        out = run_io(args.count, args.size, args.key_prefix, args.timeout)
    elif args.cmd == "chord":
        out = run_chord(args.children, args.reps, args.timeout)
    else:
        out = {"ok": ensure_bucket.delay().get(timeout=60)}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
