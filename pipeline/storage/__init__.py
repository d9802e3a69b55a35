"""Object storage: the ObjectStore protocol, S3 and local backends, the shared breaker."""

from __future__ import annotations

from pipeline.settings import Settings
from pipeline.storage.base import InvalidKey, ObjectInfo, ObjectStore, PutResult, check_key
from pipeline.storage.local import LocalObjectStore
from pipeline.storage.s3 import S3ObjectStore

__all__ = [
    "InvalidKey",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectStore",
    "PutResult",
    "S3ObjectStore",
    "check_key",
    "make_store",
]


def make_store(settings: Settings) -> ObjectStore:
    """``PLANTPIPE_STORAGE=s3`` → S3, anything else is a local directory path."""
    if settings.uses_s3:
        return S3ObjectStore(settings)
    return LocalObjectStore(settings.storage)
