"""What the stub stores: buckets, objects and multipart uploads in progress, in memory."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pipeline.testing.s3stub.protocol import MIN_PART_SIZE, S3Error


@dataclass(slots=True)
class StoredObject:
    """One stored object.  ``etag`` is quoted, exactly as sent in the ``ETag`` header."""

    body: bytes
    content_type: str
    metadata: dict[str, str]
    etag: str
    last_modified: float = field(default_factory=time.time)
    headers: dict[str, str] = field(default_factory=dict)
    """Stored standard headers (Cache-Control, Content-Disposition, Content-Encoding, ...)."""

    @property
    def size(self) -> int:
        return len(self.body)


@dataclass(slots=True)
class Upload:
    """A multipart upload in progress: its target, attributes and the parts so far."""

    bucket: str
    key: str
    content_type: str
    metadata: dict[str, str]
    headers: dict[str, str]
    parts: dict[int, tuple[bytes, str]] = field(default_factory=dict)
    """Part number -> (body, quoted ETag)."""


class Store:
    """Buckets, objects and multipart uploads; all of it lives on the stub's event loop."""

    def __init__(self, *, min_part_size: int = MIN_PART_SIZE) -> None:
        self.min_part_size = min_part_size
        """Minimum size of every part but the last (S3: 5 MiB); 0 disables the check."""
        self.buckets: dict[str, float] = {}
        """Bucket name -> creation time."""
        self.objects: dict[tuple[str, str], StoredObject] = {}
        self.uploads: dict[str, Upload] = {}
        """Multipart uploads in progress, by upload id."""

    def reset(self) -> None:
        """Drop all buckets, objects and multipart uploads."""
        self.buckets.clear()
        self.objects.clear()
        self.uploads.clear()

    def create_bucket(self, name: str) -> None:
        """Create a bucket directly (no request); existing buckets are left alone."""
        self.buckets.setdefault(name, time.time())

    def require_bucket(self, bucket: str) -> None:
        if bucket not in self.buckets:
            raise S3Error(404, "NoSuchBucket", BucketName=bucket)
