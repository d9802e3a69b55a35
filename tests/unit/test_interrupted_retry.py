"""A job interrupted by its deadline is retried — except on the last try arq allows, where a
Retry would make arq drop the job unrun ("max retries exceeded"): no dead letter, its photo
never reported, its session "processing" until the deadline (the cause of sessions stuck in
processing/inference under load in tests/faults/test_crashes.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from arq.worker import Retry

from pipeline.runtime.retry import arq_max_tries
from pipeline.runtime.roles import interrupted_retry
from pipeline.settings import Settings


async def slow_job(ctx: dict[str, Any]) -> str:
    await asyncio.sleep(0.9)  # past the 0.75 s deadline of a 1 s job
    return "finished"


async def test_an_interrupted_job_is_retried_but_never_on_arqs_last_try() -> None:
    settings = Settings(retry_delays_s=[0.1])
    wrapped = interrupted_retry(slow_job, 1.0, settings)
    with pytest.raises(Retry):
        await wrapped({"job_try": 1})
    with pytest.raises(Retry):  # our own retries spent: still a retry while arq allows one
        await wrapped({"job_try": arq_max_tries(settings) - 1})
    assert await wrapped({"job_try": arq_max_tries(settings)}) == "finished"
