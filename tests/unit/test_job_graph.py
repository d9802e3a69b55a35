"""The job graph (``pipeline.runtime.graph``) is the one declaration of each job: the roles
register exactly its jobs, under its names, each handler typed by its spec; enqueue refuses a
payload of the wrong model."""

from __future__ import annotations

import inspect
import json
import typing

import pytest
from pydantic import ValidationError

from pipeline.runtime.enqueue import QueueNames
from pipeline.runtime.graph import AGGREGATE, JOBS, RENDER_PHOTO
from pipeline.schemas import AggregateJob, ChildReport, InferJob, PhotoReport
from pipeline.settings import Settings
from pipeline.testing.kit import role_options


@pytest.mark.parametrize("role", ["io", "cpu", "gpu"])
def test_each_role_registers_exactly_its_jobs_of_the_graph(role: str) -> None:
    settings = Settings()
    options = role_options(role, settings)
    registered = {f.name: f for f in options["functions"]}
    assert set(registered) == {name for name, spec in JOBS.items() if spec.role == role}
    assert options["queue_name"] == getattr(QueueNames.from_settings(settings), role)
    for name, function in registered.items():
        handler = inspect.unwrap(function.coroutine)
        hints = typing.get_type_hints(handler)
        payload_param = list(inspect.signature(handler).parameters)[2]  # (ctx, run, payload)
        assert hints[payload_param] is JOBS[name].payload, name
        assert hints["return"] is JOBS[name].result, name


async def test_a_payload_of_another_model_is_refused_before_anything_is_queued() -> None:
    wrong = InferJob.model_construct(session_id="s", index=0, photo_count=1)
    with pytest.raises(TypeError, match="render_photo takes a RenderJob, not InferJob"):
        RENDER_PHOTO.arguments(wrong)  # type: ignore[arg-type]


def test_a_callback_carries_its_payload_as_the_job_reads_it() -> None:
    queues = QueueNames.from_settings(Settings())
    callback = AGGREGATE.callback(queues, AggregateJob(session_id="s1"), job_id="aggregate:s1")
    assert callback.function == "aggregate" and callback.queue == queues.cpu
    assert AggregateJob.model_validate(callback.arguments["payload"]).session_id == "s1"


def test_a_photo_report_reads_back_typed_and_old_failure_reports_still_read() -> None:
    analysis = {"width": 10, "height": 10, "segments": [], "detections": [], "estimations": []}
    analysis["provider"] = "CPUExecutionProvider"
    ok = ChildReport[PhotoReport].model_validate_json(
        json.dumps({"ok": True, "result": {"analysis": analysis, "warnings": ["w"]}})
    )
    assert ok.result is not None and ok.result.analysis.width == 10 and ok.result.render_ms is None
    # an earlier version stored a failed photo's report with an empty result
    failed = ChildReport[PhotoReport].model_validate_json(
        json.dumps({"ok": False, "error_code": "truncated", "reason": "cut", "result": {}})
    )
    assert failed.result is None and failed.error_code == "truncated"
    with pytest.raises(ValidationError):  # an ok report must carry the photo's analysis
        ChildReport[PhotoReport].model_validate_json(json.dumps({"ok": True, "result": {}}))
