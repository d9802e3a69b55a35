"""InferencePool: spawn processes, warm-up at start, rebuild-and-retry when a process dies."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import pytest

from pipeline.inference.config import InferenceConfig
from pipeline.inference.pool import InferencePool, WorkerStartError
from pipeline.testing.onnx_fixtures import (
    build_detect_model,
    build_segment_model,
    encode_png,
    make_nursery_photo,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> InferenceConfig:
    d = tmp_path_factory.mktemp("pool-models")
    return InferenceConfig(
        seg_model_path=build_segment_model(d / "seg.onnx", input_size=320),
        det_model_path=build_detect_model(d / "det.onnx", input_size=512),
        seg_input_size=320,
        providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
        device_ids=[0],
        intra_op_threads=1,
        pool_processes=1,
    )


@pytest.fixture(scope="module")
def photo_bytes() -> bytes:
    return encode_png(make_nursery_photo(skip=0.5, seed=2).rgb)


async def test_pool_analyzes_a_photo(config: InferenceConfig, photo_bytes: bytes) -> None:
    async with InferencePool(config) as pool:
        assert pool.started
        assert len(pool.pids) == 1
        assert pool.pids[0] != os.getpid()
        assert pool.workers[0].device_id == 0
        out = await pool.analyze(photo_bytes)
        again = await pool.analyze(photo_bytes)
    assert len(out.analysis.segments) == 2
    assert len(out.analysis.detections) > 0
    assert out.analysis.detections == again.analysis.detections
    assert out.analysis.provider == pool_provider(out.analysis.provider)
    assert not pool.started


def pool_provider(provider: str) -> str:
    # CUDA was asked for; on a CPU-only machine the worker fell back to CPU
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return "CUDAExecutionProvider"
    return "CPUExecutionProvider"


async def test_killed_process_is_replaced_and_job_retried(
    config: InferenceConfig, photo_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    pool = InferencePool(config)
    await pool.start()
    try:
        [victim] = pool.pids
        with caplog.at_level(logging.WARNING, logger="pipeline.inference"):
            job = asyncio.create_task(pool.analyze(photo_bytes))
            await asyncio.sleep(0.05)  # submitted, being processed
            os.kill(victim, signal.SIGKILL)
            out = await job
        assert len(out.analysis.detections) > 0
        assert pool.rebuilds == 1
        assert len(pool.pids) == 1
        assert pool.pids[0] != victim
        assert any("rebuilding the pool" in r.getMessage() for r in caplog.records)
        # the rebuilt pool keeps working
        again = await pool.analyze(photo_bytes)
        assert again.analysis.detections == out.analysis.detections
    finally:
        await pool.close()


async def test_worker_init_failure_is_reported_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "seg.onnx"
    bad.write_bytes(b"this is not an onnx model")
    det = build_detect_model(tmp_path / "det.onnx", input_size=256)
    cfg = InferenceConfig(
        seg_model_path=bad,
        det_model_path=det,
        providers=["CPUExecutionProvider"],
        intra_op_threads=1,
    )
    pool = InferencePool(cfg)
    with pytest.raises(WorkerStartError, match=r"failed to start: .*seg\.onnx"):
        await pool.start()
    await pool.close()


async def test_missing_model_fails_before_spawning(tmp_path: Path) -> None:
    cfg = InferenceConfig(seg_model_path=tmp_path / "none.onnx", det_model_path=tmp_path / "d")
    pool = InferencePool(cfg)
    with pytest.raises(FileNotFoundError, match=r"none\.onnx"):
        await pool.start()
    assert not pool.started


async def test_invalid_image_error_crosses_the_pool(config: InferenceConfig) -> None:
    from pipeline.vision.decode import InvalidImage

    async with InferencePool(config) as pool:
        with pytest.raises(InvalidImage):
            await pool.analyze(b"not an image at all")
        assert pool.rebuilds == 0


def test_initializer_rotates_device_ids(config: InferenceConfig) -> None:
    """Run the pool initializer in-process: slot i gets device_ids[i % len]."""
    import multiprocessing
    import queue as queue_mod

    from pipeline.inference import pool as pool_mod

    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("i", 0)
    ready: queue_mod.Queue[tuple[object, ...]] = queue_mod.Queue()
    cfg = config.model_copy(update={"device_ids": [5, 7], "warmup": False})
    try:
        for _ in range(3):
            pool_mod._init_worker(cfg, counter, ready)  # type: ignore[arg-type]
        msgs = [ready.get_nowait() for _ in range(3)]
        assert [m[0] for m in msgs] == ["ready"] * 3
        assert [m[2] for m in msgs] == [5, 7, 5]
        assert pool_mod._ANALYZER is not None
    finally:
        pool_mod._ANALYZER = None


async def test_gives_up_after_max_retries_but_heals(
    config: InferenceConfig, photo_bytes: bytes
) -> None:
    from concurrent.futures.process import BrokenProcessPool

    pool = InferencePool(config, max_retries=0)
    await pool.start()
    try:
        [victim] = pool.pids
        job = asyncio.create_task(pool.analyze(photo_bytes))
        await asyncio.sleep(0.05)
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(BrokenProcessPool):
            await job
        assert pool.rebuilds == 1
        out = await pool.analyze(photo_bytes)  # the next job runs on the rebuilt pool
        assert len(out.analysis.detections) > 0
    finally:
        await pool.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_pool_process_exits_when_its_parent_is_killed(
    config: InferenceConfig, tmp_path: Path
) -> None:
    """A SIGKILLed gpu worker must not leave its pool processes behind (holding the GPU)."""
    import subprocess
    import sys
    import textwrap
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, sys
            from pipeline.inference.config import InferenceConfig
            from pipeline.inference.pool import InferencePool

            async def main() -> None:
                pool = InferencePool(InferenceConfig.model_validate_json(sys.argv[1]))
                await pool.start()
                print(pool.pids[0], flush=True)
                await asyncio.sleep(120)

            if __name__ == "__main__":  # spawn re-imports this module in the child
                asyncio.run(main())
            """
        )
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    parent = subprocess.Popen(
        [sys.executable, str(script), config.model_dump_json()],
        stdout=subprocess.PIPE,
        env=env,
        cwd=root,
        text=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), f"pool process {child} outlived its killed parent"
