"""arq's own test suite, run against ``ResilientWorker`` (``bash scripts/arq_suite.sh``).

``python -m tests.arq_suite`` downloads the sdist of the installed arq version from PyPI,
copies its ``tests/`` and pytest configuration into a temporary folder (never its ``arq/``
package: the installed arq is the one under test), installs the test dependencies arq's own
lock file pins (pytest, pytest-asyncio, pytest-mock, … into that folder only, put first on
``PYTHONPATH``; redis-py, msgpack, pydantic and arq itself stay those of ``.venv``), starts a
private ``redis-server`` on a free port and runs arq's tests with the plugin
``plantpipe_arq_plugin`` (this folder), which

- makes every worker arq's tests build a ``ResilientWorker``: ``arq.Worker`` and
  ``arq.worker.Worker`` (what the tests construct directly and what arq's ``create_worker``
  builds), and ``pipeline.runtime.worker.install()`` for the CLI — no file of arq's is edited;
- stands in for ``testcontainers`` (arq's conftest starts Redis in Docker): its
  ``RedisContainer`` is the private server;
- refuses any connection to port 6379 (or to ``PLANTPIPE_TEST_REDIS_URL``'s port): arq's
  fixtures run ``FLUSHALL``;
- marks the tests where ``ResilientWorker`` is meant to differ from arq's worker as strict
  expected failures, by node id (:data:`plantpipe_arq_plugin.EXPECTED_TO_DIFFER`): any other
  failure, a listed test that passes, or one that is no longer there fails the run.

The Redis server is stopped afterwards, also when the run fails or is interrupted.
"""
