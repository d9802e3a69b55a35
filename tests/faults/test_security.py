"""Security: Redis AUTH and TLS URLs work end to end (and wrong credentials fail clearly),
presigned URLs are bounded. (S3 keys built from server ids only and msgpack-only job payloads
are checked under load in test_load.py and on every session of the suite.)"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.client import PipelineClient
from pipeline.errors import PermanentError
from pipeline.settings import Settings
from pipeline.storage.s3 import S3ObjectStore
from tests.conftest import WorkerProcess, track
from tests.faults.conftest import (
    ClusterFactory,
    Expected,
    FaultReport,
    RedisServer,
    bucket_objects,
    check_sessions,
    scaled,
    small_photo,
)

pytestmark = pytest.mark.faults

PASSWORD = "s3cr3t-pw_42"


async def run_one_session(
    cluster_factory: ClusterFactory, redis_url: str, localstack: str, report: FaultReport
) -> None:
    cluster = cluster_factory(redis_url=redis_url)
    await cluster.start("io", "cpu", "gpu")
    photos = [small_photo(6000 + i) for i in range(2)]
    async with PipelineClient(cluster.settings) as client:
        sid = await client.submit([d for d, _ in photos])
        record = await client.wait(sid, timeout=scaled(60), artifacts=True)
        objects = await bucket_objects(localstack, cluster.settings.s3_bucket)
        check = await check_sessions(
            client, [Expected(sid, [n for _, n in photos])], objects=objects, report=report
        )
    report.count_session(2)
    assert record.status == "completed" and record.artifacts_ready
    assert check.problems() == []


async def test_redis_auth_url_runs_a_session_and_a_wrong_password_fails_clearly(
    make_fault_cluster: ClusterFactory,
    private_redis: Callable[..., RedisServer],
    localstack: str,
    fault_report: FaultReport,
) -> None:
    server = private_redis("auth", password=PASSWORD)
    await run_one_session(make_fault_cluster, server.url(0), localstack, fault_report)

    for url, words in (
        (server.url(0, password="wrong"), ("invalid username-password", "WRONGPASS")),
        (server.url(0, password=""), ("Authentication required", "NOAUTH")),
    ):
        settings = Settings(redis_url=url, redis_conn_retries=0, key_prefix="ptauth")
        with pytest.raises(Exception) as info:  # noqa: PT011 - asserting on the text below
            async with PipelineClient(settings):
                pass
        text = f"{type(info.value).__name__}: {info.value}"
        assert any(w in text for w in words), text
        assert "Authentication" in type(info.value).__name__ or "auth" in text.lower(), text

    # a worker with the wrong password exits at once, saying why
    cluster = make_fault_cluster(redis_url=server.url(0, password="wrong"), redis_conn_retries=0)
    worker = WorkerProcess("io", cluster.env)
    try:
        worker.proc.wait(30)
        out = worker.output()
    finally:
        worker.stop()
    assert worker.proc.returncode not in (None, 0)
    assert "AuthenticationError" in out or "invalid username-password" in out, out[-2000:]


def make_certs(root: Path, san: str = "IP:127.0.0.1,DNS:localhost") -> dict[str, Path]:
    """A throwaway CA and a server certificate for ``san`` (openssl CLI)."""
    root.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=root, check=True, capture_output=True)

    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
            "-subj", "/CN=plantpipe-faults-ca")  # fmt: skip
    cn = san.split(",")[0].split(":", 1)[1]
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={cn}")
    (root / "san.ext").write_text(f"subjectAltName={san}\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "1",
            "-extfile", "san.ext")  # fmt: skip
    return {"ca": root / "ca.crt", "cert": root / "server.crt", "key": root / "server.key"}


async def test_redis_tls_url_runs_a_session(
    make_fault_cluster: ClusterFactory,
    private_redis: Callable[..., RedisServer],
    localstack: str,
    fault_report: FaultReport,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if shutil.which("openssl") is None:
        fault_report.notes.append("TLS not tested: no openssl CLI to make a test certificate")
        pytest.skip("no openssl CLI to make a test certificate")
    certs = make_certs(tmp_path / "certs")
    try:
        server = private_redis("tls", password=PASSWORD, tls=certs)
    except RuntimeError as exc:  # a redis-server built without TLS refuses the tls-* options
        if "tls" not in str(exc).lower():
            raise
        fault_report.notes.append(f"TLS not tested: redis-server cannot serve TLS: {exc}")
        pytest.skip(f"redis-server cannot serve TLS: {exc}")
    url = server.url(0, tls=True)

    # without trusting the CA the connection is refused (verification is on)
    untrusted = Settings(redis_url=url, redis_conn_retries=0, key_prefix="pttls")
    with pytest.raises(Exception, match=r"(?i)certificate verify failed|ssl"):
        async with PipelineClient(untrusted):
            pass

    # trusting it through the standard OpenSSL variable (no PLANTPIPE_ setting exists for a
    # CA bundle), workers and client run a whole session over rediss://
    monkeypatch.setenv("SSL_CERT_FILE", str(certs["ca"]))
    await run_one_session(make_fault_cluster, url, localstack, fault_report)
    fault_report.notes.append(
        "TLS: a session ran over rediss:// (redis-server --tls-port, private CA trusted via "
        "SSL_CERT_FILE); without the CA the client fails with certificate verify failed"
    )


async def test_redis_tls_refuses_a_certificate_for_another_host(
    private_redis: Callable[..., RedisServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression, fixed in d6d6aec (pipeline/queue.py ``redis_settings``). The bug: for
    ``rediss://`` URLs arq's
    ``RedisSettings.from_dsn`` leaves ``ssl_check_hostname=False``, so the certificate chain
    is verified but not the name in it: any certificate issued by a trusted CA — for any
    host — is accepted, which is what a man in the middle needs (with a public CA, any
    domain's certificate). Here Redis at 127.0.0.1 presents a valid certificate for
    ``elsewhere.example`` and the client connects. Fix: set ``ssl_check_hostname=True`` for
    rediss:// (and let operators pass a CA bundle / client certificate through
    PLANTPIPE_ settings instead of only the process-wide SSL_CERT_FILE)."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl CLI to make a test certificate")
    certs = make_certs(tmp_path / "wrong-host", san="DNS:elsewhere.example")
    try:
        server = private_redis("tls-wrong-host", password=PASSWORD, tls=certs)
    except RuntimeError as exc:
        if "tls" not in str(exc).lower():
            raise
        pytest.skip(f"redis-server cannot serve TLS: {exc}")
    monkeypatch.setenv("SSL_CERT_FILE", str(certs["ca"]))
    settings = Settings(redis_url=server.url(0, tls=True), redis_conn_retries=0, key_prefix="pth")
    connected = False
    with contextlib.suppress(Exception):
        async with PipelineClient(settings) as client:
            connected = bool(await client.redis.ping())
    assert not connected, "connected to 127.0.0.1 presenting a certificate for elsewhere.example"


async def test_presigned_urls_are_bounded_and_work(localstack: str) -> None:
    settings = track(
        Settings(
            storage="s3",
            s3_endpoint_url=localstack,
            s3_bucket="bk-faults-presign",
            s3_create_bucket=True,
            presign_max_expiry_s=600,
        )
    )
    store = S3ObjectStore(settings)
    await store.start()
    try:
        await store.put("sess/original.jpg", b"\xff\xd8\xffphoto", content_type="image/jpeg")
        for bad in (0, -1, -3600, 601, 10**9):
            with pytest.raises(PermanentError) as info:
                await store.presign_get("sess/original.jpg", bad)
            assert info.value.code == "bad_expiry"
            assert "1..600" in info.value.reason
        url = await store.presign_get("sess/original.jpg", 600)
        assert "/bk-faults-presign/sess/original.jpg?" in url
        assert await store.presign_get("sess/original.jpg", 1)
    finally:
        await store.close()

    def fetch() -> bytes:
        with urllib.request.urlopen(url, timeout=10) as resp:
            body: bytes = resp.read()
        return body

    assert await asyncio.to_thread(fetch) == b"\xff\xd8\xffphoto"


async def test_presigned_urls_are_signed_with_sigv4() -> None:
    """Regression, fixed in d6d6aec (pipeline/storage/s3.py ``S3ObjectStore._config``). The
    bug: no ``signature_version`` was
    set, so botocore presigns with legacy SigV2 (``AWSAccessKeyId=…&Signature=…&Expires=…``,
    global endpoint even for eu-west-1). AWS refuses SigV2 for buckets created after June 2020
    and in every region launched after 2014, so these URLs fail on real S3. Fix: add
    ``signature_version="s3v4"`` to the botocore Config (SigV4 also caps expiry at 7 days:
    validate ``presign_max_expiry_s <= 604800``)."""
    settings = Settings(s3_region="eu-west-1", s3_bucket="bk-presign", presign_max_expiry_s=600)
    store = S3ObjectStore(settings)
    await store.open()  # presigning is local: nothing is sent
    try:
        url = await store.presign_get("sess/original.jpg", 600)
    finally:
        await store.close()
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url, url
    assert "X-Amz-Expires=600" in url, url
