"""The stub as a process: ``python -m pipeline.testing.s3stub --port 9000 --latency-ms 50``
prints ``ready http://127.0.0.1:PORT`` on stdout once it listens; stops on SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from pipeline.testing.s3stub.protocol import MIN_PART_SIZE
from pipeline.testing.s3stub.server import S3Stub


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.testing.s3stub",
        description="In-memory S3 stub on 127.0.0.1 with latency, stats and fault injection.",
    )
    parser.add_argument("--port", type=int, default=9000, help="port (0: any free port)")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="added latency per S3 request"
    )
    parser.add_argument(
        "--bucket",
        action="append",
        default=[],
        metavar="NAME",
        help="create this bucket at start (repeatable)",
    )
    parser.add_argument(
        "--min-part-size",
        type=int,
        default=MIN_PART_SIZE,
        help="minimum size of non-last multipart parts (S3: 5 MiB; 0 disables the check)",
    )
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    stub = S3Stub(
        port=args.port, latency_s=args.latency_ms / 1000.0, min_part_size=args.min_part_size
    )
    for name in args.bucket:
        stub.create_bucket(name)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    endpoint = await stub.start()
    try:
        print(f"ready {endpoint}", flush=True)
        await stopping.wait()
    finally:
        await stub.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except OSError as exc:
        print(f"s3stub: cannot listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
