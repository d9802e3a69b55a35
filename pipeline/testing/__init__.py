"""A testing kit for suites that use plantpipe: real workers inside the test's event loop.

Installed with the package and registered as a pytest plugin (``pytest11`` entry point
``plantpipe``), so a pytest-asyncio suite gets these fixtures without any import:

- ``plantpipe_settings`` — :class:`~pipeline.settings.Settings` isolated for one test: its own
  key prefix on the test Redis, a fresh bucket on LocalStack (created by the io worker,
  emptied and removed afterwards), quick retries. Override the fixture
  ``plantpipe_overrides`` (a dict of settings) to change any of it, e.g. the model paths.
- ``plantpipe_workers`` — io, cpu and gpu workers running in-process (the same
  ``ResilientWorker`` that ``arq workers.<role>.WorkerSettings`` runs); their keys are removed
  afterwards.
- ``plantpipe_client`` — a connected :class:`~pipeline.client.PipelineClient` on those
  workers.

Where the services are: ``PLANTPIPE_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/15``) and ``PLANTPIPE_TEST_S3_ENDPOINT`` (default
``http://127.0.0.1:4566``). A fixture fails (never skips) with what to start when one is down.

Outside pytest, the same pieces: :func:`isolated_settings`, :func:`running_pipeline`
(``async with running_pipeline(settings) as client``), :func:`in_process_worker`,
:func:`drop_keys` and :func:`remove_bucket`.

The project's own test and benchmark infrastructure lives here too, one place that both
``tests/`` and ``bench/`` import (import each module where it is needed; none is loaded by
this package): :mod:`pipeline.testing.s3stub` (an in-memory S3 endpoint with latency, stats
and fault injection; ``python -m pipeline.testing.s3stub``), :mod:`pipeline.testing.tcp_proxy`
(a TCP proxy a test can cut), :mod:`pipeline.testing.onnx_fixtures` (tiny YOLO-layout ONNX
models and matching photos; needs ``onnx``, in the ``dev`` extra) and
:mod:`pipeline.testing.faultreport` (what the fault suite observed; ``python -m bench.faults``
renders it).
"""

from pipeline.testing.kit import (
    ROLES,
    ServiceUnavailable,
    drop_keys,
    in_process_worker,
    isolated_settings,
    localstack_healthy,
    redis_reachable,
    redis_url_for_tests,
    remove_bucket,
    role_options,
    running_pipeline,
    running_workers,
    s3_endpoint_for_tests,
)

__all__ = [
    "ROLES",
    "ServiceUnavailable",
    "drop_keys",
    "in_process_worker",
    "isolated_settings",
    "localstack_healthy",
    "redis_reachable",
    "redis_url_for_tests",
    "remove_bucket",
    "role_options",
    "running_pipeline",
    "running_workers",
    "s3_endpoint_for_tests",
]
