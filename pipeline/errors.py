"""Errors that carry a machine code and a human reason across process boundaries."""

from __future__ import annotations


class PipelineError(Exception):
    """Base of plantpipe's own errors: ``code`` for machines, ``reason`` for people."""

    code: str = "error"

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


class PermanentError(PipelineError):
    """Retrying cannot help (missing bucket, access denied, invalid image...)."""

    code = "permanent"
    #: Whether this error can be the trace of writes a Redis failover lost, which the job
    #: that made them restores when it re-runs (``pipeline.runtime.job``): right after a
    #: failover such a failure is retried before it counts as permanent.
    may_follow_failover: bool = False


class TransientError(PipelineError):
    """Retrying later may help (timeouts, 5xx, throttling, connection resets)."""

    code = "transient"


class ConfigurationError(PipelineError):
    """The environment is not fit to run (evicting Redis, unreachable bucket...)."""

    code = "configuration"


class UploadFailed(PipelineError):
    """Raised by ``UploadHandle.wait()`` when an upload ended in failure."""

    code = "upload_failed"


class InvalidSettings(ConfigurationError, ValueError):
    """A ``PLANTPIPE_*`` setting (or two that must agree) is out of range: ``reason`` is one
    line naming the variable, the value and what is allowed."""

    code = "invalid_settings"

    def __str__(self) -> str:
        return self.reason
