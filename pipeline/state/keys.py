"""Every Redis key name plantpipe uses, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.settings import Settings


@dataclass(frozen=True)
class Keys:
    prefix: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Keys:
        return cls(settings.key_prefix)

    # blobs
    def blob(self, sha256: str) -> str:
        return f"{self.prefix}:blob:{sha256}"

    def blob_holders(self, sha256: str) -> str:
        return f"{self.prefix}:blob:{sha256}:holders"

    # artifacts (one object to upload)
    def artifact(self, artifact_id: str) -> str:
        return f"{self.prefix}:artifact:{artifact_id}"

    def artifact_events(self, artifact_id: str) -> str:
        return f"{self.prefix}:artifact:{artifact_id}:events"

    # dead letters
    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}:deadletter"

    @property
    def dead_letter_order(self) -> str:
        return f"{self.prefix}:deadletter:order"

    # S3 circuit breaker shared by every io process
    def breaker(self, name: str) -> str:
        return f"{self.prefix}:breaker:{name}"

    # sessions
    def session(self, session_id: str) -> str:
        return f"{self.prefix}:session:{session_id}"

    def session_events(self, session_id: str) -> str:
        return f"{self.prefix}:session:{session_id}:events"

    @property
    def sessions_active(self) -> str:
        return f"{self.prefix}:sessions:active"

    @property
    def sessions_index(self) -> str:
        """Every session by creation time (score: epoch seconds), newest last."""
        return f"{self.prefix}:sessions:index"

    @property
    def sessions_status_base(self) -> str:
        """Prefix of the per-status indexes (``+ status``), scored like the index."""
        return f"{self.prefix}:sessions:status:"

    @property
    def sessions_search(self) -> str:
        """Session id -> its searchable text, lower case (id, metadata, failure reason)."""
        return f"{self.prefix}:sessions:search"

    def sessions_by_status(self, status: str) -> str:
        return f"{self.sessions_status_base}{status}"

    @property
    def feed(self) -> str:
        """One stream of every session's changes and dead letters (the dashboard follows it)."""
        return f"{self.prefix}:feed"

    # the dashboard's record of the actions taken through it (retry, discard, upload)
    @property
    def dashboard_audit(self) -> str:
        return f"{self.prefix}:dashboard:audit"

    # joins (fan-in)
    def join(self, join_id: str) -> str:
        return f"{self.prefix}:join:{join_id}"

    def join_results(self, join_id: str) -> str:
        return f"{self.prefix}:join:{join_id}:results"

    @property
    def joins_open(self) -> str:
        return f"{self.prefix}:joins:open"

    @property
    def replication_marker(self) -> str:
        """Written before a WAIT, so the WAIT covers every earlier write
        (``pipeline.runtime.replication``); expires by itself."""
        return f"{self.prefix}:replication:marker"

    def failover_rerun(self, job_id: str) -> str:
        """Marks a job re-run because the Redis master changed while it ran: its "already
        done" shortcuts cannot be trusted then (``pipeline.runtime.job``)."""
        return f"{self.prefix}:failover-rerun:{job_id}"

    # metrics / worker registry
    def worker_heartbeat(self, role: str, worker_id: str) -> str:
        return f"{self.prefix}:worker:{role}:{worker_id}"
