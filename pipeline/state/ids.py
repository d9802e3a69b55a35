"""Names of a session's photos, jobs and artifacts. Keys come from server ids only."""

from __future__ import annotations

from pipeline.vision.outputs import PHOTO_OUTPUTS


def session_join_id(session_id: str) -> str:
    return f"session:{session_id}"


def child_id(index: int) -> str:
    return f"photo-{index}"


def infer_job_id(session_id: str, index: int) -> str:
    return f"infer:{session_id}:{index}"


def render_job_id(session_id: str, index: int) -> str:
    return f"render:{session_id}:{index}"


def aggregate_job_id(session_id: str) -> str:
    return f"aggregate:{session_id}"


def artifact_id(session_id: str, index: int | None, name: str) -> str:
    return f"{session_id}:{name}" if index is None else f"{session_id}:{index}:{name}"


def photo_key(session_id: str, index: int, photo_count: int, name: str, ext: str = "") -> str:
    """``{session}/original.jpg`` for one photo, ``{session}/{index}/original.jpg`` for many;
    ``name`` is an output of :data:`~pipeline.vision.outputs.PHOTO_OUTPUTS`."""
    base = session_id if photo_count == 1 else f"{session_id}/{index}"
    return f"{base}/{PHOTO_OUTPUTS.file_name(name, ext)}"


def results_key(session_id: str) -> str:
    return f"{session_id}/results.json"


def infer_holder(session_id: str, index: int) -> str:
    return f"infer:{session_id}:{index}"


def render_holder(session_id: str, index: int) -> str:
    return f"render:{session_id}:{index}"
