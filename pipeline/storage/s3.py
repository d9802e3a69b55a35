"""S3 object store on aioboto3: one client per process, every request under one semaphore."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, suppress
from typing import Any, TypeVar

import aioboto3
from botocore.config import Config
from botocore.exceptions import ClientError

from pipeline.errors import ConfigurationError, PermanentError
from pipeline.settings import Settings
from pipeline.storage.base import ObjectInfo, PutResult, check_key
from pipeline.storage.sdk_tuning import tune_client

T = TypeVar("T")


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


class S3ObjectStore:
    """aioboto3-backed store.

    ``concurrency`` bounds the S3 requests in flight from this process (every request,
    multipart parts included, takes a permit). ``max_in_flight`` records the highest count seen.
    """

    def __init__(self, settings: Settings, *, concurrency: int | None = None) -> None:
        self._settings = settings
        self.bucket = settings.s3_bucket
        self.concurrency = concurrency or settings.io_concurrency
        self._sem = asyncio.Semaphore(self.concurrency)
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self.in_flight = 0
        self.max_in_flight = 0
        where = settings.s3_endpoint_url or f"AWS {settings.s3_region}"
        self.description = f"s3://{self.bucket} at {where}"

    def _config(self) -> Config:
        # Without payload signing a body is hashed once, by whoever made the blob: its SHA-256
        # travels as x-amz-checksum-sha256 (a signed header; S3 verifies the body against
        # it) — with it, botocore hashes every body a second time for the signature.
        s3_opts: dict[str, Any] = {"payload_signing_enabled": self._settings.s3_sign_payload}
        if self._settings.s3_endpoint_url:
            s3_opts["addressing_style"] = "path"
        return Config(
            region_name=self._settings.s3_region,
            max_pool_connections=max(50, self.concurrency),
            connect_timeout=self._settings.s3_connect_timeout_s,
            read_timeout=self._settings.s3_read_timeout_s,
            retries={"total_max_attempts": 1, "mode": "standard"},  # our retry policy decides
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            signature_version="s3v4",
            s3=s3_opts,
        )

    async def open(self) -> None:
        """Open the process-wide client without touching the bucket."""
        if self._client is not None:
            return
        stack = AsyncExitStack()
        session = aioboto3.Session()
        self._client = await stack.enter_async_context(
            session.client(
                "s3",
                endpoint_url=self._settings.s3_endpoint_url,
                region_name=self._settings.s3_region,
                config=self._config(),
            )
        )
        self._stack = stack
        tune_client(self._client, self._settings)  # see pipeline.storage.sdk_tuning

    async def start(self) -> None:
        await self.open()
        await self.ensure_bucket(create=self._settings.s3_create_bucket)

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._stack = None
        self._client = None

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("S3ObjectStore used before open()/start()")
        return self._client

    async def _call(self, fn: Callable[..., Awaitable[T]], **kwargs: Any) -> T:
        async with self._sem:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return await fn(**kwargs)
            finally:
                self.in_flight -= 1

    async def ensure_bucket(self, *, create: bool) -> None:
        try:
            await self._call(self.client.head_bucket, Bucket=self.bucket)
            return
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = _error_code(exc)
            if status == 403 or code in ("403", "AccessDenied"):
                raise ConfigurationError(
                    f"access denied to bucket {self.bucket!r} at {self.description}: check the "
                    "AWS credentials (AWS_ACCESS_KEY_ID/AWS_PROFILE) and the bucket policy",
                    code="AccessDenied",
                ) from exc
            if not (status == 404 or code in ("404", "NoSuchBucket", "NotFound")):
                raise
        if not create:
            raise ConfigurationError(
                f"bucket {self.bucket!r} does not exist at {self.description}; create it or set "
                "PLANTPIPE_S3_CREATE_BUCKET=1",
                code="NoSuchBucket",
            )
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self._settings.s3_region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self._settings.s3_region}
        try:
            await self._call(self.client.create_bucket, **kwargs)
        except ClientError as exc:
            if _error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def _extra(self, content_type: str, metadata: dict[str, str] | None, sha: str) -> Any:
        extra: dict[str, Any] = {
            "ContentType": content_type,
            "Metadata": {**(metadata or {}), "sha256": sha},
        }
        if self._settings.s3_sse:
            extra["ServerSideEncryption"] = self._settings.s3_sse
            if self._settings.s3_sse == "aws:kms" and self._settings.s3_sse_kms_key_id:
                extra["SSEKMSKeyId"] = self._settings.s3_sse_kms_key_id
        return extra

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: dict[str, str] | None = None,
        sha256: str | None = None,
    ) -> PutResult:
        """One hash per object at most: the object's SHA-256 (the blob's id when the caller
        passes it, computed here otherwise) goes into its metadata and, for a single PUT, into
        ``x-amz-checksum-sha256``, so S3 verifies the body against it — end-to-end integrity
        from the client's hash, with no MD5 and no second pass over the bytes (the request's
        signature covers that header, not the body's own hash, unless
        ``PLANTPIPE_S3_SIGN_PAYLOAD``). A multipart upload's parts carry their own Content-MD5
        (S3 verifies each part)."""
        check_key(key)
        sha = sha256 or hashlib.sha256(data).hexdigest()
        extra = self._extra(content_type, metadata, sha)
        if len(data) > self._settings.s3_multipart_threshold_bytes:
            etag = await self._put_multipart(key, data, extra)
            return PutResult(key=key, size=len(data), etag=etag, sha256=sha, multipart=True)
        resp = await self._call(
            self.client.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ChecksumSHA256=base64.b64encode(bytes.fromhex(sha)).decode(),
            **extra,
        )
        return PutResult(key=key, size=len(data), etag=resp.get("ETag"), sha256=sha)

    async def _put_multipart(self, key: str, data: bytes, extra: dict[str, Any]) -> str | None:
        created = await self._call(
            self.client.create_multipart_upload, Bucket=self.bucket, Key=key, **extra
        )
        upload_id = created["UploadId"]
        chunk = self._settings.s3_multipart_chunk_bytes
        try:

            async def part(number: int, offset: int) -> dict[str, Any]:
                body = data[offset : offset + chunk]
                resp = await self._call(
                    self.client.upload_part,
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                    ContentMD5=_md5_b64(body),
                )
                return {"PartNumber": number, "ETag": resp["ETag"]}

            parts = await asyncio.gather(
                *(part(i + 1, off) for i, off in enumerate(range(0, len(data), chunk)))
            )
            done = await self._call(
                self.client.complete_multipart_upload,
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": list(parts)},
            )
            etag: str | None = done.get("ETag")
            return etag
        except BaseException:
            with suppress(Exception):  # the original error matters more
                await self._call(
                    self.client.abort_multipart_upload,
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                )
            raise

    async def get(self, key: str) -> bytes:
        try:
            resp = await self._call(self.client.get_object, Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                raise PermanentError(
                    f"no object {key!r} in {self.description}", code="NoSuchKey"
                ) from exc
            raise
        async with resp["Body"] as body:
            data: bytes = await body.read()
        return data

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            resp = await self._call(self.client.head_object, Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        metadata = {str(k): str(v) for k, v in (resp.get("Metadata") or {}).items()}
        return ObjectInfo(
            key=key,
            size=int(resp.get("ContentLength", 0)),
            content_type=str(resp.get("ContentType", "")),
            etag=resp.get("ETag"),
            metadata=metadata,
            sha256=metadata.get("sha256"),
        )

    async def delete(self, key: str) -> None:
        await self._call(self.client.delete_object, Bucket=self.bucket, Key=key)

    async def list_keys(self, prefix: str = "") -> list[str]:
        keys: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            resp = await self._call(self.client.list_objects_v2, **kwargs)
            keys.extend(obj["Key"] for obj in resp.get("Contents", []))
            if not resp.get("IsTruncated"):
                return keys
            token = resp.get("NextContinuationToken")

    async def presign_get(self, key: str, expires_s: int) -> str:
        """A presigned GET URL; expiry is capped by PLANTPIPE_PRESIGN_MAX_EXPIRY_S."""
        cap = self._settings.presign_max_expiry_s
        if not 1 <= expires_s <= cap:
            raise PermanentError(
                f"presigned URL expiry must be 1..{cap} s, got {expires_s}", code="bad_expiry"
            )
        url: str = await self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
        )
        return url
