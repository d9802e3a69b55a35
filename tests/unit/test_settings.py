"""Settings refuse combinations that would lose work."""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path

import pytest

from pipeline.errors import InvalidSettings
from pipeline.settings import Settings


def test_session_records_must_outlive_the_deadline() -> None:
    with pytest.raises(InvalidSettings, match="PLANTPIPE_SESSION_TTL_S"):
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
    # None where the default is not None travels as null (PLANTPIPE_MERGE_LARGE_PX=null)
    none_env = Settings(merge_large_px=None).to_env({})
    assert none_env["PLANTPIPE_MERGE_LARGE_PX"] == "null"
    monkeypatch.setenv("PLANTPIPE_MERGE_LARGE_PX", "null")
    assert Settings().merge_large_px is None


# --- ranges: every numeric setting refuses a negative, text, and zero where 0 means nothing ---

#: Numeric settings where 0 is a meaningful value ("auto", "none", "every body waits"...).
ZERO_ALLOWED = {
    "redis_conn_retries",
    "redis_replica_acks",  # 0 = do not wait for replicas
    "s3_expect_continue_bytes",
    "cpu_max_jobs",
    "gpu_max_jobs",
    "pool_processes",
    "intra_op_threads",
    "slice_overlap",
    "slice_edge_margin_px",
    "segment_crop_pad",
    "unassigned_slice_fraction",
    "avif_quality",
    "avif_speed",
    "dashboard_port",  # a free port
    "avif_threads",
    "retry_delays_s",  # [0]: retry at once
    "device_ids",  # [0]: the first CUDA device
    "metrics_port",  # any free port
    "min_plant_support",  # count every box
}


def numeric_fields() -> dict[str, bool]:
    """Every numeric setting (a number, an optional one, or a JSON list of numbers) -> whether
    it is a list."""
    found: dict[str, bool] = {}
    for name, field in Settings.model_fields.items():
        args = [a for a in typing.get_args(field.annotation) if a is not type(None)]
        bare = args[0] if typing.get_origin(field.annotation) is not list and args else None
        while typing.get_origin(bare) is typing.Annotated:
            bare = typing.get_args(bare)[0]
        if field.annotation in (int, float) or bare in (int, float):
            found[name] = False
        elif typing.get_origin(field.annotation) is list:
            item = typing.get_args(typing.get_args(field.annotation)[0])
            if item and item[0] in (int, float):
                found[name] = True
    return found


def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("PLANTPIPE_"):
            monkeypatch.delenv(name)


def refused(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> str:
    monkeypatch.setenv(variable, value)
    with pytest.raises(InvalidSettings) as info:
        Settings()
    monkeypatch.delenv(variable)
    message = str(info.value)
    assert "\n" not in message, message
    assert f"{variable}={value!r}" in message, message
    assert "must be" in message or "allowed is" in message, message
    return message


def test_every_numeric_setting_refuses_negatives_text_and_meaningless_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clean_env(monkeypatch)
    fields = numeric_fields()
    assert len(fields) > 50 and "det_conf" in fields and "retry_delays_s" in fields
    assert set(fields) >= ZERO_ALLOWED, ZERO_ALLOWED - set(fields)
    for name, is_list in fields.items():
        variable = f"PLANTPIPE_{name.upper()}"
        wrap = (lambda v: f"[{v}]") if is_list else (lambda v: v)
        refused(monkeypatch, variable, wrap("-1"))
        refused(monkeypatch, variable, "fifty")
        if is_list:
            refused(monkeypatch, variable, "2,4,8")  # not JSON
        if name in ZERO_ALLOWED:
            monkeypatch.setenv(variable, wrap("0"))
            Settings()  # accepted
            monkeypatch.delenv(variable)
        else:
            refused(monkeypatch, variable, wrap("0"))


def test_the_issues_examples_are_one_line_naming_the_variable_value_and_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clean_env(monkeypatch)
    assert refused(monkeypatch, "PLANTPIPE_DET_CONF", "-1").endswith(
        "PLANTPIPE_DET_CONF='-1' is not allowed: it must be a number > 0 and ≤ 1"
    )
    assert "a whole number from 2 to" in refused(monkeypatch, "PLANTPIPE_GPU_JOB_TIMEOUT_S", "-5")
    assert "a whole number from 1 to 1000" in refused(
        monkeypatch, "PLANTPIPE_IO_CONCURRENCY", "fifty"
    )
    assert "e.g. '[2.0, 4.0, 8.0]'" in refused(monkeypatch, "PLANTPIPE_RETRY_DELAYS_S", "2,4,8")
    assert "one of DEBUG, INFO" in refused(monkeypatch, "PLANTPIPE_LOG_LEVEL", "loud")
    assert "S3 bucket name" in refused(monkeypatch, "PLANTPIPE_S3_BUCKET", "My_Bucket")
    monkeypatch.setenv("PLANTPIPE_LOG_LEVEL", "debug")
    assert Settings().log_level == "DEBUG"


def test_settings_that_must_agree_are_checked_together(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch)
    cases = {
        "PLANTPIPE_GPU_JOB_TIMEOUT_S (45) must be shorter than PLANTPIPE_SESSION_DEADLINE_S": {
            "session_deadline_s": 40,
            "io_job_timeout_s": 10,
            "cpu_job_timeout_s": 10,
        },
        "PLANTPIPE_MAX_UPLOAD_BYTES (2000) must not exceed PLANTPIPE_MAX_BLOB_BYTES": {
            "max_upload_bytes": 2000,
            "max_blob_bytes": 1000,
        },
        "PLANTPIPE_BLOB_TTL_S (600) must be at least PLANTPIPE_SESSION_DEADLINE_S": {
            "blob_ttl_s": 600,
        },
        "PLANTPIPE_RESCALE_MIN_PX (90.0) must be below PLANTPIPE_RESCALE_MAX_PX": {
            "rescale_min_px": 90.0,
        },
        "PLANTPIPE_S3_SSE_KMS_KEY_ID is set but PLANTPIPE_S3_SSE is not 'aws:kms'": {
            "s3_sse_kms_key_id": "key-1",
        },
    }
    for expected, values in cases.items():
        with pytest.raises(InvalidSettings) as info:
            Settings(**values)
        assert expected in str(info.value) and "\n" not in str(info.value)


def test_every_setting_is_read_somewhere() -> None:
    """A documented setting nothing reads is a lie (PLANTPIPE_MAX_TRIES was one)."""
    root = Path(__file__).resolve().parents[2]
    sources = [
        p.read_text()
        for folder in ("pipeline", "workers")
        for p in (root / folder).rglob("*.py")
        if p.name not in ("settings.py", "settings_rules.py")
    ]
    text = "\n".join(sources)
    unread = [
        name
        for name in Settings.model_fields
        if not re.search(rf"\b{name}\b", text)
        and name != "cpu_max_jobs"  # read by Settings.cpu_concurrency
    ]
    assert unread == []


def test_inference_config_gets_only_values_settings_allow(monkeypatch: pytest.MonkeyPatch) -> None:
    """InferenceConfig carries the inference settings (InferenceSettings, which Settings
    inherits); the CLI and the environment reach it only through Settings
    (InferenceConfig.from_settings), whose ranges refuse the values first."""
    from pipeline.inference.config import InferenceConfig

    clean_env(monkeypatch)
    shared = set(InferenceConfig.model_fields) & set(Settings.model_fields)
    assert {"det_conf", "seg_conf", "slice_size", "bands", "thumbnail_px"} <= shared
    for name in shared & set(numeric_fields()):
        assert Settings.model_fields[name].metadata or any(
            getattr(a, "__metadata__", None)
            for a in typing.get_args(Settings.model_fields[name].annotation)
        ), f"{name} has no range in Settings"
    monkeypatch.setenv("PLANTPIPE_DET_CONF", "-1")
    with pytest.raises(InvalidSettings, match="PLANTPIPE_DET_CONF"):
        InferenceConfig.from_settings(Settings())
