"""Every inference setting reaches the pool process as ``Settings`` holds it: declared once in
``InferenceSettings``, read from its ``PLANTPIPE_`` variable, carried by ``InferenceConfig``
into a real (spawned) pool process. A field added to ``InferenceSettings`` is covered here
with nothing to copy: the test walks the model's fields, gives each one a value other than
its default, and fails for a field it cannot give one (so a new kind of field is noticed)."""

from __future__ import annotations

import json
import math
import typing
from pathlib import Path
from typing import Any

import annotated_types as at
import pytest
from pydantic.fields import FieldInfo

from pipeline.inference import pool as pool_module
from pipeline.inference.config import InferenceConfig
from pipeline.inference.pool import InferencePool
from pipeline.settings import Settings
from pipeline.settings_inference import InferenceSettings
from pipeline.testing.onnx_fixtures import build_detect_model, build_segment_model

pytestmark = pytest.mark.timeout(180)


def _bounds(field: FieldInfo) -> list[Any]:
    metadata = list(field.metadata)
    for arg in typing.get_args(field.annotation):  # Optional[Annotated[float, Field(...)]]
        metadata += getattr(arg, "__metadata__", ())
    out: list[Any] = []
    for item in metadata:
        out += list(getattr(item, "metadata", ())) or [item]
    return out


def other_number(field: FieldInfo, default: float) -> float:
    """A value within the field's range that is not ``default``."""
    step: float = 1
    low, high, low_in, high_in = -math.inf, math.inf, False, False
    for bound in _bounds(field):
        if isinstance(bound, at.Ge | at.Gt):
            low_in = isinstance(bound, at.Ge)
            low = float(bound.ge if isinstance(bound, at.Ge) else bound.gt)
        if isinstance(bound, at.Le | at.Lt):
            high_in = isinstance(bound, at.Le)
            high = float(bound.le if isinstance(bound, at.Le) else bound.lt)
        if isinstance(bound, at.MultipleOf):
            step = float(bound.multiple_of)
    if isinstance(default, float) and step == 1:  # 5 % off (keeps ordered settings ordered)
        step = abs(default) * 0.05 or 0.01
    for candidate in (default - step, default + step):
        if (candidate > low or (low_in and candidate == low)) and (
            candidate < high or (high_in and candidate == high)
        ):
            return candidate
    raise AssertionError(f"no other value in [{low}, {high}] for default {default}")


def changed_values(models: dict[str, Path]) -> dict[str, Any]:
    """Each inference setting at a valid value other than its default."""
    explicit: dict[str, Any] = {
        "seg_model_path": models["seg"],
        "det_model_path": models["det"],
        "seg_input_size": 320,  # the sizes the test models are built for
        "det_input_size": 544,
        "device_ids": [0, 0],
        "providers": ["CPUExecutionProvider"],
        "seg_class_names": ["light tray", "tray"],  # the test model has two classes
        "det_class_names": ["seedling", "weed"],
    }
    values: dict[str, Any] = {}
    for name, field in InferenceSettings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if name in explicit:
            values[name] = explicit[name]
        elif isinstance(default, bool):
            values[name] = not default
        elif isinstance(default, int | float):
            values[name] = other_number(field, default)
            if isinstance(default, int):
                values[name] = int(values[name])
        else:
            raise AssertionError(
                f"InferenceSettings.{name} is of a kind this test cannot change yet "
                f"({field.annotation}): add a value for it to `explicit`"
            )
        assert values[name] != default, name
    return values


def config_in_pool_process() -> dict[str, Any]:
    """Runs inside a pool process: the configuration its analyzer was built from."""
    analyzer = pool_module._ANALYZER
    assert analyzer is not None
    return analyzer.config.model_dump(mode="json")


async def test_every_inference_setting_reaches_the_pool_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = {
        "seg": build_segment_model(tmp_path / "seg.onnx", input_size=320),
        "det": build_detect_model(tmp_path / "det.onnx", input_size=544),
    }
    values = changed_values(models)
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"PLANTPIPE_{name.upper()}", raising=False)
    for name, value in values.items():  # through the environment, as a user sets them
        text = json.dumps(value, default=str) if isinstance(value, list) else str(value)
        monkeypatch.setenv(f"PLANTPIPE_{name.upper()}", text)
    settings = Settings()
    expected = settings.model_dump(mode="json", include=set(InferenceSettings.model_fields))
    assert expected == json.loads(json.dumps(values, default=str))  # Settings took them all

    config = InferenceConfig.from_settings(settings, warmup=False)
    async with InferencePool(config, processes=1) as pool:
        assert pool._executor is not None
        seen = pool._executor.submit(config_in_pool_process).result(timeout=60)
    assert {name: seen[name] for name in expected} == expected
