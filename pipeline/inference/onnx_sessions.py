"""ONNX Runtime sessions: provider selection with CPU fallback, and a batching model wrapper.

``create_session`` honours the provider preference order. CUDA gets
``{"device_id": id, "cudnn_conv_algo_search": "HEURISTIC"}``. When CUDA was requested but this
onnxruntime build does not offer it, or the session cannot be created with it, or it silently
ends up on another provider, a warning naming the reason goes to the ``pipeline.inference``
logger and the session runs on CPU. The provider that really runs is reported.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from pipeline.inference.modelspec import ModelKind, ModelSpec, ModelSpecError, resolve_model_spec
from pipeline.inference.yolo import NUM_MASK_COEFFS, PAD_VALUE, FloatArray

logger = logging.getLogger("pipeline.inference")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

ProviderEntry = str | tuple[str, dict[str, Any]]

# While set (see ``collected_fallbacks``), fallback warnings are gathered here, each once,
# instead of being logged by every session: an analyzer opens two (segment, detect).
_collected: list[str] | None = None


@contextmanager
def collected_fallbacks() -> Iterator[list[str]]:
    """Gather the provider-fallback warnings of the sessions created in this block (each
    distinct message once) so that the caller reports them once; they are logged at DEBUG."""
    global _collected
    previous, _collected = _collected, []
    try:
        yield _collected
    finally:
        _collected = previous


def _fallback_warning(message: str, *args: Any) -> None:
    if _collected is None:
        logger.warning(message, *args)
        return
    text = message % args
    if text not in _collected:
        _collected.append(text)
    logger.debug(message, *args)


def provider_options(provider: str, device_id: int) -> dict[str, Any]:
    """Options we pass to a provider (empty for providers we do not tune)."""
    if provider == CUDA:
        return {"device_id": device_id, "cudnn_conv_algo_search": "HEURISTIC"}
    if provider == "TensorrtExecutionProvider":
        return {"device_id": device_id}
    return {}


def _session_options(intra_op_threads: int) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    if intra_op_threads > 0:
        so.intra_op_num_threads = intra_op_threads
    so.log_severity_level = 3  # our own warnings say what matters
    return so


def create_session(
    path: Path | str,
    providers: Sequence[str],
    device_id: int = 0,
    intra_op_threads: int = 0,
) -> tuple[ort.InferenceSession, str]:
    """Create an ``InferenceSession`` for ``path`` with the preferred ``providers``.

    Returns ``(session, provider_used)`` where ``provider_used`` is
    ``session.get_providers()[0]``. Unavailable or failing accelerators fall back to CPU with a
    warning on the ``pipeline.inference`` logger; CPU is always the last resort.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    available = list(ort.get_available_providers())
    requested = list(dict.fromkeys(providers)) or [CPU]

    chosen: list[str] = []
    for name in requested:
        if name in available:
            chosen.append(name)
        else:
            _fallback_warning(
                "%s requested but not available in this onnxruntime build (available: %s); "
                "falling back to %s%s",
                name,
                ", ".join(available),
                CPU,
                " (is onnxruntime-gpu installed, with matching CUDA and cuDNN?)"
                if name == CUDA
                else "",
            )
    if CPU not in chosen:
        chosen.append(CPU)
    entries: list[ProviderEntry] = [
        (name, opts) if (opts := provider_options(name, device_id)) else name for name in chosen
    ]
    so = _session_options(intra_op_threads)
    try:
        session = ort.InferenceSession(str(path), sess_options=so, providers=entries)
    except Exception as exc:
        if chosen == [CPU]:
            raise
        _fallback_warning(
            "creating the session for %s with %s failed (%s: %s); falling back to %s",
            path.name,
            chosen[0],
            type(exc).__name__,
            exc,
            CPU,
        )
        session = ort.InferenceSession(str(path), sess_options=so, providers=[CPU])
    used = str(session.get_providers()[0])
    if chosen[0] != CPU and used != chosen[0]:
        _fallback_warning(
            "%s was requested for %s but the session runs on %s (provider failed to load — "
            "check the CUDA/cuDNN libraries)",
            chosen[0],
            path.name,
            used,
        )
    return session, used


class YoloModel:
    """An ONNX Runtime session plus its ``ModelSpec``; runs batches of letterboxed inputs.

    A model whose batch axis is a fixed int ``B`` (``static_batch``) is always fed exactly ``B``
    images: larger batches are split, the last one padded with grey (114/255) images whose
    outputs are dropped. A dynamic batch axis takes the batch as given.
    """

    def __init__(self, session: ort.InferenceSession, spec: ModelSpec, provider: str) -> None:
        self.session = session
        self.spec = spec
        self.provider = provider
        inp = session.get_inputs()[0]
        self.input_name: str = inp.name
        shape = list(inp.shape)
        batch = shape[0] if shape else None
        self.static_batch: int | None = batch if isinstance(batch, int) and batch > 0 else None
        self.output_names: list[str] = [o.name for o in session.get_outputs()]
        outputs = session.get_outputs()
        expected = 2 if spec.kind == "segment" else 1
        if len(outputs) < expected:
            raise ModelSpecError(
                f"{spec.path} has {len(outputs)} output(s); a YOLO {spec.kind} export has "
                f"{expected}"
            )
        rows = next((list(o.shape) for o in outputs if len(o.shape) == 3), None)
        if rows is None:
            raise ModelSpecError(f"{spec.path} has no [B, 4 + nc(+32), N] output")
        want = 4 + spec.nc + (NUM_MASK_COEFFS if spec.kind == "segment" else 0)
        if isinstance(rows[1], int) and rows[1] != want:
            raise ModelSpecError(
                f"{spec.path} outputs {rows[1]} rows per anchor but {spec.nc} class names "
                f"{spec.class_names} need {want}: class names do not match the model"
            )

    @classmethod
    def load(
        cls,
        path: Path | str,
        *,
        kind: ModelKind,
        providers: Sequence[str],
        device_id: int = 0,
        intra_op_threads: int = 0,
        class_names: Sequence[str] | None = None,
        input_size: int | None = None,
    ) -> YoloModel:
        path = Path(path)
        session, provider = create_session(path, providers, device_id, intra_op_threads)
        meta = session.get_modelmeta()
        spec = resolve_model_spec(
            path,
            kind=kind,
            class_names=class_names,
            input_size=input_size,
            metadata=dict(meta.custom_metadata_map or {}),
            input_shape=list(session.get_inputs()[0].shape),
        )
        return cls(session, spec, provider)

    def batch_size(self, requested: int) -> int:
        """Images per device call: the static batch if fixed, else ``requested``."""
        return self.static_batch or max(1, requested)

    def new_batch(self, n: int) -> FloatArray:
        """An uninitialised ``[n, 3, S, S]`` float32 input batch."""
        s = self.spec.input_size
        return np.empty((n, 3, s, s), dtype=np.float32)

    def run(self, batch: FloatArray) -> list[FloatArray]:
        """Run ``batch`` ``[n, 3, S, S]``; returns every output with first dim ``n``."""
        n = batch.shape[0]
        if n == 0:
            raise ValueError("empty batch")
        step = self.static_batch or n
        parts: list[list[FloatArray]] = []
        for start in range(0, n, step):
            chunk = batch[start : start + step]
            if chunk.shape[0] < step:
                pad = np.full(
                    (step - chunk.shape[0], *chunk.shape[1:]), PAD_VALUE, dtype=np.float32
                )
                chunk = np.concatenate([chunk, pad], axis=0)
            outs = self.session.run(
                self.output_names, {self.input_name: np.ascontiguousarray(chunk)}
            )
            take = min(step, n - start)
            parts.append([np.asarray(o, dtype=np.float32)[:take] for o in outs])
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate(p, axis=0) for p in zip(*parts, strict=True)]

    def warmup(self) -> None:
        """One dummy inference (allocates buffers, picks kernels) on a grey batch."""
        self.run(
            np.full(
                (self.batch_size(1), 3, self.spec.input_size, self.spec.input_size),
                PAD_VALUE,
                dtype=np.float32,
            )
        )
