"""What the decoders need to know about an exported YOLO model: task, class names, input size.

``resolve_model_spec`` reads them from the ONNX metadata Ultralytics writes (``names``,
``imgsz``, ``task``), from a ``<model>.json`` sidecar, or from explicit settings, and
raises ``ModelSpecError`` when one cannot be told.
"""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger("pipeline.inference")

ModelKind = Literal["detect", "segment"]

__all__ = [
    "ModelKind",
    "ModelSpec",
    "ModelSpecError",
    "parse_names",
    "resolve_model_spec",
    "sidecar_path",
]


class ModelSpecError(ValueError):
    """A model cannot be described: class names, input size or task are missing or wrong."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What the decoders need to know about an exported model."""

    path: Path
    class_names: list[str]
    input_size: int
    kind: ModelKind

    @property
    def nc(self) -> int:
        return len(self.class_names)


def parse_names(value: Any) -> list[str]:
    """Class names from a sidecar/metadata value: a list, a ``{index: name}`` dict, or the
    python-literal string Ultralytics writes (``"{0: 'plant', 1: 'weed'}"``) — parsed with
    ``ast.literal_eval``, never ``eval``."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError) as exc:
            raise ModelSpecError(f"cannot parse class names {value[:80]!r}: {exc}") from None
    if isinstance(value, Mapping):
        try:
            items = sorted((int(k), str(v)) for k, v in value.items())
        except (TypeError, ValueError) as exc:
            raise ModelSpecError(f"class-name keys must be integers: {exc}") from None
        if [k for k, _ in items] != list(range(len(items))):
            raise ModelSpecError(f"class-name keys must be 0..n-1, got {[k for k, _ in items]}")
        return [v for _, v in items]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ModelSpecError(f"class names must be a list or {{index: name}} dict, got {value!r:.80}")


def _parse_imgsz(value: Any) -> int | None:
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            return None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, list | tuple) and value and all(isinstance(v, int) for v in value):
        if len(set(value)) != 1:
            raise ModelSpecError(f"only square inputs are supported, got imgsz {list(value)}")
        return int(value[0])
    return None


def sidecar_path(model_path: Path) -> Path:
    """``model.onnx`` → ``model.json`` (the sidecar describing names, imgsz and task)."""
    return model_path.with_suffix(".json")


def resolve_model_spec(
    path: Path,
    *,
    kind: ModelKind,
    class_names: Sequence[str] | None = None,
    input_size: int | None = None,
    metadata: Mapping[str, str] | None = None,
    input_shape: Sequence[Any] | None = None,
) -> ModelSpec:
    """Describe a model.

    Class names, first found wins: ``class_names`` (settings), the JSON sidecar
    ``<model>.json`` (``{"names": [...], "imgsz": N, "task": "detect"|"segment"}``), the ONNX
    metadata props Ultralytics writes (``names`` as a python-literal dict string).
    Input size: a static spatial size in ``input_shape`` (the model accepts nothing else),
    else the sidecar's or metadata's ``imgsz`` (what the model was exported for), else
    ``input_size`` (settings). A ``task`` in sidecar/metadata must equal ``kind``.
    """
    sidecar: dict[str, Any] = {}
    side = sidecar_path(path)
    if side.is_file():
        try:
            loaded = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelSpecError(f"cannot read model sidecar {side}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ModelSpecError(f"model sidecar {side} must hold a JSON object")
        sidecar = loaded
    meta = dict(metadata or {})

    task = sidecar.get("task") or meta.get("task")
    if task is not None and task != kind:
        raise ModelSpecError(f"{path} is a {task!r} model, expected {kind!r}")

    names: list[str] | None = None
    if class_names:
        names = list(class_names)
    elif "names" in sidecar:
        names = parse_names(sidecar["names"])
    elif "names" in meta:
        names = parse_names(meta["names"])
    if not names:
        raise ModelSpecError(
            f"no class names for {kind} model {path}: set PLANTPIPE_"
            f"{'SEG' if kind == 'segment' else 'DET'}_CLASS_NAMES, write a sidecar {side} "
            "with {\"names\": [...]}, or export with Ultralytics (metadata 'names')"
        )

    size: int | None = None
    if input_shape is not None and len(input_shape) == 4:
        h, w = input_shape[2], input_shape[3]
        if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
            if h != w:
                raise ModelSpecError(f"{path}: only square inputs are supported, got {h}x{w}")
            size = h
            if input_size is not None and input_size != size:
                logger.warning(
                    "model %s has a fixed %dpx input; configured input size %d ignored",
                    path,
                    size,
                    input_size,
                )
    if size is None:
        size = _parse_imgsz(sidecar.get("imgsz")) or _parse_imgsz(meta.get("imgsz")) or input_size
    if size is None:
        raise ModelSpecError(f"no input size for {kind} model {path}")
    return ModelSpec(path=path, class_names=names, input_size=int(size), kind=kind)
