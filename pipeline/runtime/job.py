"""One job skeleton for every role: the handler is the work alone.

``role_job(SPEC)`` (a job of ``pipeline.runtime.graph``) turns ``async def handler(ctx:
RoleContext, run: JobRun, job: Payload) -> Result`` into the function arq runs. The skeleton
validates the payload into the spec's payload model, binds the
session (and photo) to every log line, keeps the job's outcome for the metrics, and gives the
handler :meth:`JobRun.guard`: the part of the work that may fail runs there under its time
budget, after the crash-loop check; a transient failure is retried (arq ``Retry`` after
``retry_delays_s``), anything else — or a transient one out of tries — is dead-lettered and
handed to the handler's ``on_give_up`` (which records the failure where the user sees it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, TypeVar, overload

import structlog
from arq.worker import Retry
from pydantic import BaseModel

from pipeline.errors import PermanentError
from pipeline.logs import get_logger
from pipeline.runtime.connection import NO_REPLAY, CommandOutcomeUnknown
from pipeline.runtime.context import RoleContext, role_context
from pipeline.runtime.graph import JobSpec
from pipeline.runtime.replication import (
    MasterChanged,
    failover_retry_delay,
    keep_writes,
    master_id,
    replica_acks,
)
from pipeline.runtime.retry import (
    Classified,
    arq_max_tries,
    classify,
    describe,
    redis_cannot_write,
    retry_delay,
)
from pipeline.schemas import BlobRef, DeadLetter, JobOutcome
from pipeline.state.keys import Keys
from pipeline.state.redisio import typed

log = get_logger("pipeline.job")

#: How long a job re-run after a failover is marked as such (:meth:`JobRun.after_failover`).
RERUN_MARK_S = 3600

Outcome = Literal["ok", "failed", "retried", "deferred", "error"]
GiveUp = Callable[[str, str], Awaitable[None]]
OnError = Callable[[Exception], Awaitable[bool]]
M = TypeVar("M", bound=BaseModel)
R = TypeVar("R", bound=JobOutcome)
C = TypeVar("C", bound=RoleContext)
T = TypeVar("T")


@dataclass(frozen=True)
class TakenOver:
    """What :meth:`JobRun.guard` returns when its ``on_error`` took the failure over (e.g.
    the io role deferring an upload while S3 is out): no retry used up, no dead letter."""

    error: Exception


@dataclass(frozen=True)
class GaveUp:
    """What a job returns when it gave up (after its dead letter and ``on_give_up``)."""

    code: str
    reason: str

    def outcome(self, model: type[R]) -> R:
        """The job's result saying it gave up (``model``: the job's result model)."""
        return model(ok=False, error_code=self.code, reason=self.reason)


def time_budget(timeout_s: float) -> float:
    """How long a job's work may take: its arq timeout less a margin, so the job itself times
    out (a transient error, retried then dead-lettered) before arq cancels it silently."""
    return max(0.5, timeout_s - max(0.5, timeout_s * 0.1))


async def dead_letter(
    ctx: RoleContext,
    *,
    function: str,
    job_id: str,
    payload: dict[str, Any],
    verdict: Classified,
    attempts: int,
    session_id: str | None,
    replayable: bool = True,
) -> None:
    """Keep a job that gave up, with its reason, so it can be listed and replayed as
    ``function(payload=payload)`` on the role's queue."""
    await ctx.deadletters.add(
        DeadLetter(
            id=f"{job_id}:{int(time.time() * 1000)}",
            function=function,
            queue=ctx.queue,
            job_id=job_id,
            kwargs={"payload": payload},
            error_code=verdict.code,
            reason=verdict.reason,
            attempts=attempts,
            session_id=session_id,
            replayable=replayable,
        )
    )


@dataclass
class JobRun:
    """One run of one job: who it is, which try, how it ended."""

    ctx: RoleContext
    function: str
    job_id: str
    job_try: int
    payload: dict[str, Any]
    session_id: str | None
    outcome: Outcome = "ok"
    replayable: bool = True

    async def after_failover(self) -> bool:
        """Whether this run repeats one the Redis master changed under. Its "already done"
        shortcuts (a photo already analysed, a join already complete) cannot be trusted then:
        a command retried on the new master can land there although writes made before it
        were lost with the old one. Such a run redoes every write (each is idempotent)."""
        if replica_acks(self.ctx.settings) == 0:
            return False
        key = Keys.from_settings(self.ctx.settings).failover_rerun(self.job_id)
        return bool(await typed(self.ctx.redis).exists(key))

    async def finished_before_failover(self, blob: BlobRef) -> bool:
        """In a re-run after a failover (:meth:`after_failover`): whether the run the failover
        interrupted had finished. It had when its input ``blob`` is gone — every holder let
        go of it, this job's last step — for then every write it made before that reached
        the new master too (a job's commands are never replayed on a new master, see
        ``CommandOutcomeUnknown``, so the new master holds a past of the old one's)."""
        if not await self.after_failover():
            return False
        return not await self.ctx.blobs.exists(blob)

    def crash_loop(self) -> PermanentError | None:
        """Give up before arq does: a job re-run this often was interrupted by its worker
        dying (our own retries stop earlier). On arq's last allowed try we fail it ourselves,
        so the failure is dead-lettered and reported instead of arq dropping it silently."""
        if self.job_try < arq_max_tries(self.ctx.settings):
            return None
        return PermanentError(
            f"the worker running this job stopped {self.job_try - 1} times while it ran "
            "(killed, out of memory or timed out); giving up — see the worker logs",
            code="crash_loop",
        )

    def check_crash_loop(self) -> None:
        """Raise :meth:`crash_loop`'s error on arq's last allowed try."""
        error = self.crash_loop()
        if error is not None:
            raise error

    @overload
    async def guard(
        self,
        work: Callable[[], Awaitable[T]],
        *,
        budget_s: float | None,
        on_give_up: GiveUp | None = None,
    ) -> T | GaveUp: ...

    @overload
    async def guard(
        self,
        work: Callable[[], Awaitable[T]],
        *,
        budget_s: float | None,
        on_give_up: GiveUp | None = None,
        on_error: OnError,
    ) -> T | GaveUp | TakenOver: ...

    async def guard(
        self,
        work: Callable[[], Awaitable[T]],
        *,
        budget_s: float | None,
        on_give_up: GiveUp | None = None,
        on_error: OnError | None = None,
    ) -> T | GaveUp | TakenOver:
        """Run ``work`` within ``budget_s`` (None: no budget of its own). Returns its result,
        or :class:`GaveUp` once the failure is recorded; raises arq ``Retry`` for a transient
        failure with tries left.
        ``on_error`` sees every failure first (e.g. the io role's circuit breaker); when it
        returns True it has taken the failure over, and guard returns :class:`TakenOver`."""
        try:
            self.check_crash_loop()
            async with asyncio.timeout(budget_s):
                return await work()
        except Exception as exc:
            if on_error is not None and await on_error(exc):
                return TakenOver(exc)
            return await self.fail(exc, on_give_up)

    async def fail(self, exc: Exception, on_give_up: GiveUp | None = None) -> GaveUp:
        """Retry ``exc`` (raises ``Retry``) or give up: dead letter, then ``on_give_up``."""
        verdict, delay = await retry_or_give_up(
            self.ctx,
            exc,
            function=self.function,
            job_id=self.job_id,
            payload=self.payload,
            attempt=self.job_try,
            session_id=self.session_id,
            replayable=self.replayable,
        )
        if delay is not None:
            self.outcome = "retried"
            raise Retry(defer=delay) from exc
        self.outcome = "failed"
        if on_give_up is not None:
            await on_give_up(verdict.code, verdict.reason)
        return GaveUp(verdict.code, verdict.reason)


async def retry_or_give_up(
    ctx: RoleContext,
    exc: BaseException,
    *,
    function: str,
    job_id: str,
    payload: dict[str, Any],
    attempt: int,
    session_id: str | None,
    replayable: bool = True,
    **fields: Any,
) -> tuple[Classified, float | None]:
    """The retry policy applied to one failure on try ``attempt``: returns its verdict and
    the delay before the next try, or None once it gave up (logged, dead letter written:
    replayable as ``function(payload=payload)``). ``fields`` go on the log line."""
    verdict = classify(exc)
    if verdict.transient:
        event, delay = "job.retry", retry_delay(ctx.settings, attempt)
    else:  # permanent, unless a recent failover's lost writes explain it
        event, delay = "job.retry_after_failover", failover_retry_delay(ctx.settings, exc, attempt)
    if delay is not None:
        log.warning(
            event,
            function=function,
            error_code=verdict.code,
            reason=verdict.reason,
            retry_in_s=delay,
            next_try=attempt + 1,
            **fields,
        )
        return verdict, delay
    log.error(
        "job.gave_up",
        function=function,
        error_code=verdict.code,
        reason=verdict.reason,
        transient=verdict.transient,
        tries=attempt,
        exc_info=verdict.transient and not verdict.code.startswith(("Client", "Endpoint")),
        **fields,
    )
    await dead_letter(
        ctx,
        function=function,
        job_id=job_id,
        payload=payload,
        verdict=verdict,
        attempts=attempt,
        session_id=session_id,
        replayable=replayable,
    )
    return verdict, None


@contextlib.asynccontextmanager
async def kept_through_failover(run: JobRun) -> AsyncIterator[None]:
    """Under Sentinel (``replica_acks`` > 0), a job counts as done only once its writes are
    safe from a failover: they are waited for on a replica (``WAIT``), and when the master
    changed while the job ran (what the old one acknowledged — a join report, an artifact
    record — may be gone), or a command's answer was cut off by the failover, the job runs
    again (arq ``Retry``): every job is idempotent, so the re-run restores what was lost and
    repeats nothing that was kept."""
    ctx = run.ctx
    want = replica_acks(ctx.settings)
    if want == 0:
        yield
        return
    before = await master_id(ctx.redis)
    # The job's own commands are never replayed on a new master (see CommandOutcomeUnknown).
    no_replay = NO_REPLAY.set(True)
    lost: MasterChanged | CommandOutcomeUnknown | None = None
    try:
        yield
        keys = Keys.from_settings(ctx.settings)
        acked = await keep_writes(ctx.redis, keys, want, ctx.settings.redis_replica_wait_s, before)
    except (MasterChanged, CommandOutcomeUnknown) as exc:
        lost = exc
    finally:
        NO_REPLAY.reset(no_replay)
    if lost is not None:
        await rerun_after_failover(run, lost)
    if acked < want:
        log.warning("job.not_replicated", function=run.function, replicas=acked, wanted=want)


async def rerun_after_failover(run: JobRun, exc: BaseException) -> NoReturn:
    """Run ``run`` again, with its "already done" shortcuts off (:meth:`JobRun.after_failover`):
    the master changed while it wrote, or a command's answer was cut off by a failover."""
    ctx = run.ctx
    run.outcome = "retried"
    log.warning("job.rerun_after_failover", function=run.function, reason=str(exc))
    await typed(ctx.redis).set(
        Keys.from_settings(ctx.settings).failover_rerun(run.job_id), "1", ex=RERUN_MARK_S
    )
    # The new master may not know this job at all (its enqueue was among the lost writes):
    # queue it there first — a no-op when it is known — so arq's retry finds its definition
    # instead of dropping it as expired.
    await ctx.redis.enqueue_job(
        run.function, payload=run.payload, _job_id=run.job_id, _queue_name=ctx.queue
    )
    raise Retry(defer=0) from exc


Handler = Callable[[C, JobRun, M], Awaitable[R]]


def role_job(
    spec: JobSpec[M, R], *, replayable: bool = True
) -> Callable[[Handler[C, M, R]], Callable[..., Awaitable[dict[str, Any]]]]:
    """Decorate ``handler(ctx, run, job)`` into the arq job ``spec.name(ctx, payload)`` (see the
    module docstring): the payload validated once into ``spec.payload``, the handler's
    ``spec.result`` handed to arq as JSON. ``replayable``: whether its dead letters may be
    replayed as they are."""

    def wrap(handler: Handler[C, M, R]) -> Callable[..., Awaitable[dict[str, Any]]]:
        if handler.__name__ != spec.name:
            raise TypeError(f"the handler of job {spec.name} is named {handler.__name__}")

        @functools.wraps(handler)
        async def run_job(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
            job = spec.payload.model_validate(payload)
            session_id = getattr(job, "session_id", None)
            index = getattr(job, "index", None)
            structlog.contextvars.bind_contextvars(
                session_id=session_id, **({} if index is None else {"photo": index})
            )
            run = JobRun(
                ctx=role_context(ctx),
                function=handler.__name__,
                job_id=str(ctx.get("job_id", "unknown")),
                job_try=int(ctx.get("job_try", 1)),
                payload=payload,
                session_id=session_id,
                replayable=replayable,
                outcome="error",
            )
            try:
                async with kept_through_failover(run):
                    result = await handler(run.ctx, run, job)  # type: ignore[arg-type]
                if run.outcome == "error":
                    run.outcome = "ok"
                return result.model_dump(mode="json", exclude_none=True)
            except Exception as exc:
                if not redis_cannot_write(exc):
                    raise
                # Redis full (maxmemory) or still unreachable after the ride-out, past the
                # handler's own error handling: the job runs again later (every job is
                # idempotent) rather than arq recording it failed and its work lost.
                run.outcome = "retried"
                delay = min(30.0, 2.0**run.job_try)
                log.warning(
                    "job.redis_unavailable",
                    function=run.function,
                    error=describe(exc),
                    retry_in_s=delay,
                )
                raise Retry(defer=delay) from exc
            finally:
                ctx["outcome"] = run.outcome

        return run_job

    return wrap
