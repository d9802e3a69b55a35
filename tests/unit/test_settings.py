"""Settings refuse combinations that would lose work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.settings import Settings


def test_session_records_must_outlive_the_deadline() -> None:
    with pytest.raises(ValidationError, match="PLANTPIPE_SESSION_TTL_S"):
        Settings(session_ttl_s=600, session_deadline_s=1800)
    assert Settings(session_ttl_s=1801, session_deadline_s=1800).session_ttl_s == 1801


def test_the_watchdog_cron_is_named_after_the_key_prefix() -> None:
    from workers.cpu import worker_options

    crons = worker_options(Settings(key_prefix="depl-a"))["cron_jobs"]
    assert [c.name for c in crons] == ["depl-a:watchdog"]


def test_to_env_hands_a_child_process_this_configuration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What `plantpipe run`/`workers` give their child processes: Settings() there reads
    back the same configuration; inherited PLANTPIPE_* settings are replaced, not kept."""
    inherited = {"PATH": "/bin", "plantpipe_key_prefix": "stale", "PLANTPIPE_TEST_X": "kept"}
    given = Settings(
        key_prefix="child",
        storage=str(tmp_path),
        retry_delays_s=[1.5, 3.0],
        log_json=False,
        seg_model_path=tmp_path / "seg.onnx",
        seg_class_names=["bed", "tray"],
        poll_delay_s=0.125,
        metrics_port=None,
    )
    env = given.to_env(inherited)
    assert env["PATH"] == "/bin" and env["PLANTPIPE_TEST_X"] == "kept"
    assert "plantpipe_key_prefix" not in env and env["PLANTPIPE_KEY_PREFIX"] == "child"
    assert "PLANTPIPE_METRICS_PORT" not in env  # None = the default: left out
    assert "PLANTPIPE_BANDS" not in env  # not given: the child's default
    for name in list(os.environ):
        if name.upper().startswith("PLANTPIPE_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings().model_dump() == given.model_dump()
    with pytest.raises(ValueError, match="PLANTPIPE_MERGE_LARGE_PX"):
        Settings(merge_large_px=None).to_env()
