"""Job payloads on the wire: msgpack, never pickle.

Exceptions that arq stores as failed job results are encoded as a msgpack extension (type
name + message), never pickled; pydantic models travel as their JSON form.
"""

from __future__ import annotations

from typing import Any, Final

import msgpack

_EXC_EXT: Final = 1


class RemoteJobError(RuntimeError):
    """A job failure decoded from Redis: the original exception's type name and message."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message


def _encode_default(obj: Any) -> Any:
    if isinstance(obj, BaseException):
        payload = msgpack.packb([type(obj).__name__, str(obj)], use_bin_type=True)
        return msgpack.ExtType(_EXC_EXT, payload)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "model_dump"):  # pydantic models
        return obj.model_dump(mode="json")
    raise TypeError(f"cannot serialize {type(obj).__name__} into a job payload")


def _decode_ext(code: int, data: bytes) -> Any:
    if code == _EXC_EXT:
        type_name, message = msgpack.unpackb(data, raw=False)
        return RemoteJobError(str(type_name), str(message))
    return msgpack.ExtType(code, data)


def serialize(obj: dict[str, Any]) -> bytes:
    """arq job_serializer: msgpack, never pickle."""
    packed: bytes = msgpack.packb(obj, default=_encode_default, use_bin_type=True)
    return packed


def deserialize(data: bytes) -> dict[str, Any]:
    """arq job_deserializer."""
    obj = msgpack.unpackb(data, raw=False, ext_hook=_decode_ext, strict_map_key=False)
    if not isinstance(obj, dict):
        raise ValueError("job payload is not a msgpack map")
    return obj
