"""The job graph: each job declared once — name, role (its queue), payload model, result model.

A photo's way through the jobs, each step a typed call::

    PipelineClient.submit ── INFER_PHOTO(InferJob) ──▶ infer_photo (gpu)
      └─ RENDER_PHOTO(RenderJob: the PhotoAnalysis) ──▶ render_photo (cpu)
           └─ the session's join: ChildReport[PhotoReport]
                └─ AGGREGATE(AggregateJob), the join's callback ──▶ aggregate (cpu) ──▶ results.json
    every object to store ── UPLOAD(UploadJob) / UPLOAD_BATCH(UploadBatch) ──▶ io

``JobSpec.enqueue`` takes the payload as its model (mypy checks it) and is the one place it
is serialized for arq; ``pipeline.runtime.job.role_job(SPEC)`` validates it once into the same
model in the worker and types the handler by the spec. ``python -m pipeline.runtime.graph``
prints the job table the README shows (``--readme README.md`` rewrites it there).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from arq.connections import ArqRedis
from arq.jobs import Job
from pydantic import BaseModel

from pipeline.runtime.enqueue import QueueNames, enqueue
from pipeline.runtime.joins import Callback
from pipeline.schemas import (
    AggregateJob,
    AggregateOutcome,
    InferJob,
    InferOutcome,
    JobOutcome,
    RenderJob,
    RenderOutcome,
    UploadBatch,
    UploadJob,
    UploadOutcome,
)

Role = Literal["io", "cpu", "gpu"]
P = TypeVar("P", bound=BaseModel)
R = TypeVar("R", bound=JobOutcome)


@dataclass(frozen=True)
class JobSpec(Generic[P, R]):
    """One job of the graph. ``name`` is the arq function name (and the handler's)."""

    name: str
    role: Role
    payload: type[P]
    result: type[R]
    what: str
    enqueued_by: str

    def queue(self, queues: QueueNames) -> str:
        queue: str = getattr(queues, self.role)
        return queue

    def arguments(self, payload: P) -> dict[str, Any]:
        """arq's keyword arguments for ``payload``: the one place it is serialized."""
        if not isinstance(payload, self.payload):
            raise TypeError(
                f"{self.name} takes a {self.payload.__name__}, not {type(payload).__name__}"
            )
        return {"payload": payload.model_dump(mode="json")}

    async def enqueue(
        self,
        redis: ArqRedis,
        queues: QueueNames,
        payload: P,
        *,
        job_id: str,
        defer_s: float | None = None,
    ) -> Job | None:
        """Queue this job with ``payload`` on its role's queue under ``job_id`` (arq queues an
        id once: None when it is already there); ``defer_s``: not before then."""
        return await self.enqueue_on(
            redis, self.queue(queues), payload, job_id=job_id, defer_s=defer_s
        )

    async def enqueue_on(
        self,
        redis: ArqRedis,
        queue: str,
        payload: P,
        *,
        job_id: str,
        defer_s: float | None = None,
    ) -> Job | None:
        """:meth:`enqueue` onto the queue named ``queue`` (a role that knows only its own)."""
        defer = {} if defer_s is None else {"_defer_by": defer_s}
        return await enqueue(
            redis, self.name, _job_id=job_id, _queue_name=queue, **defer, **self.arguments(payload)
        )

    def callback(self, queues: QueueNames, payload: P, *, job_id: str) -> Callback:
        """This job as a join's callback (queued once, when the join's children all reported)."""
        return Callback(
            function=self.name,
            queue=self.queue(queues),
            job_id=job_id,
            arguments=self.arguments(payload),
        )


INFER_PHOTO: JobSpec[InferJob, InferOutcome] = JobSpec(
    "infer_photo",
    "gpu",
    InferJob,
    InferOutcome,
    "analyse one photo (segments, detections, band estimate); queue its render",
    "`PipelineClient.submit`, one per photo",
)
RENDER_PHOTO: JobSpec[RenderJob, RenderOutcome] = JobSpec(
    "render_photo",
    "cpu",
    RenderJob,
    RenderOutcome,
    "draw the photo's outputs, hand them to io, report the photo into its session's join",
    "`infer_photo`",
)
AGGREGATE: JobSpec[AggregateJob, AggregateOutcome] = JobSpec(
    "aggregate",
    "cpu",
    AggregateJob,
    AggregateOutcome,
    "results.json from the join's reports; the session's final status; its uploads queued",
    "the session's join, when every photo reported",
)
UPLOAD: JobSpec[UploadJob, UploadOutcome] = JobSpec(
    "upload",
    "io",
    UploadJob,
    UploadOutcome,
    "copy one blob to its S3 key (a batch of one)",
    "every producer of an object (`stage`/`enqueue_uploads`), one object",
)
UPLOAD_BATCH: JobSpec[UploadBatch, UploadOutcome] = JobSpec(
    "upload_batch",
    "io",
    UploadBatch,
    UploadOutcome,
    "copy blobs produced together, each with its own state, retries and dead letter",
    "every producer of objects (`stage`/`enqueue_uploads`), several at once",
)

#: Every job of the graph, by name.
JOBS: dict[str, JobSpec[Any, Any]] = {
    spec.name: spec for spec in (INFER_PHOTO, RENDER_PHOTO, AGGREGATE, UPLOAD, UPLOAD_BATCH)
}

TABLE_START = "<!-- job table: python -m pipeline.runtime.graph --readme README.md -->"
TABLE_END = "<!-- end of job table -->"


def job_table() -> str:
    """The README's job table (markdown), from :data:`JOBS`."""
    rows = [
        "| job | queue (role) | payload | result | queued by | does |",
        "|---|---|---|---|---|---|",
    ]
    for spec in JOBS.values():
        rows.append(
            f"| `{spec.name}` | `{{prefix}}:queue:{spec.role}` ({spec.role}) | "
            f"`{spec.payload.__name__}` | `{spec.result.__name__}` | {spec.enqueued_by} | "
            f"{spec.what} |"
        )
    return "\n".join(rows)


def with_job_table(readme: str) -> str:
    """``readme`` with the text between the table's markers replaced by :func:`job_table`."""
    start, end = readme.find(TABLE_START), readme.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {TABLE_START} … {TABLE_END} markers")
    return readme[: start + len(TABLE_START)] + "\n" + job_table() + "\n" + readme[end:]


def main(argv: list[str]) -> int:
    if argv[:1] == ["--readme"] and len(argv) == 2:
        with open(argv[1], encoding="utf-8") as f:
            text = f.read()
        with open(argv[1], "w", encoding="utf-8") as f:
            f.write(with_job_table(text))
        return 0
    if argv:
        print("usage: python -m pipeline.runtime.graph [--readme README.md]", file=sys.stderr)
        return 2
    print(job_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
