"""What the fault-and-abuse suite (``tests/faults``) observed, as data.

The suite's tests add their numbers to one :class:`FaultReport` (the ``fault_report``
fixture); at the end of a run the suite prints :meth:`FaultReport.table` and, when pytest is
given ``--faults-report PATH``, writes the report there as JSON (:meth:`FaultReport.to_json`).
``python -m bench.faults`` runs the suite that way and renders ``bench/FAULTS.md`` from the
JSON (:meth:`FaultReport.from_json`); no test writes into ``bench/``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass
class FaultReport:
    load_sessions: int = 0
    load_photos: int = 0
    load_wall_s: float = 0.0
    photos_total: int = 0
    sessions_total: int = 0
    kills: dict[str, int] = field(default_factory=lambda: {"io": 0, "cpu": 0, "gpu": 0})
    pool_kills: int = 0
    s3_outage_s: float = 0.0
    s3_denied_replayed: int = 0
    redis_restarts: int = 0
    worker_restarts_after_redis: list[str] = field(default_factory=list)
    inputs_tried: list[str] = field(default_factory=list)
    sessions_checked: int = 0
    sessions_lost: int = 0
    artifacts_checked: int = 0
    artifacts_lost: int = 0
    double_counts: int = 0
    job_payloads_checked: int = 0
    pickled_payloads: int = 0
    permanent_keys: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)
    """Test (node id under ``tests/faults/``) -> pytest outcome."""
    started: float = field(default_factory=time.monotonic)
    elapsed_s: float = 0.0
    """Wall seconds of the run, set when the report is written."""

    def count_session(self, photos: int) -> None:
        self.sessions_total += 1
        self.photos_total += photos

    def table(self) -> str:
        kills = ", ".join(f"{r} {n}" for r, n in self.kills.items())
        inputs = ", ".join(self.inputs_tried) or "—"
        restarts = (
            f"{self.redis_restarts} (workers restarted after it: "
            f"{', '.join(self.worker_restarts_after_redis) or 'none needed'})"
        )
        rows = [
            (
                "load held",
                f"{self.load_sessions} sessions, {self.load_photos} photos in "
                f"{self.load_wall_s:.1f} s (20 concurrent client tasks)",
            ),
            ("sessions / photos through the suite", f"{self.sessions_total} / {self.photos_total}"),
            ("worker SIGKILLs per role", kills),
            ("inference pool process SIGKILLs", str(self.pool_kills)),
            ("S3 outage", f"{self.s3_outage_s:.1f} s (S3 cut mid-load)"),
            (
                "403 AccessDenied / 404 NoSuchBucket uploads dead-lettered, then replayed",
                str(self.s3_denied_replayed),
            ),
            ("Redis kill -9 + restart (AOF)", restarts),
            ("bad inputs tried", f"{len(self.inputs_tried)}: {inputs}"),
            (
                "job payloads scanned / pickled",
                f"{self.job_payloads_checked} / {self.pickled_payloads}",
            ),
            ("sessions checked / lost", f"{self.sessions_checked} / {self.sessions_lost}"),
            ("artifacts checked / lost", f"{self.artifacts_checked} / {self.artifacts_lost}"),
            ("double counts", str(self.double_counts)),
            ("permanent keys (no TTL) seen", ", ".join(sorted(self.permanent_keys)) or "none"),
        ]
        lines = ["| measure | observed |", "|---|---|"]
        lines += [f"| {a} | {b} |" for a, b in rows]
        return "\n".join(lines)

    def modules_run(self) -> set[str]:
        """File names of the suite's test modules that ran (``test_s3.py`` …)."""
        return {name.split("::", 1)[0] for name in self.outcomes}

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("started")
        data["permanent_keys"] = sorted(self.permanent_keys)
        return json.dumps(data, indent=1)  # key order kept: the table lists kills in order

    @classmethod
    def from_json(cls, text: str) -> FaultReport:
        data: dict[str, Any] = json.loads(text)
        known = {f.name for f in fields(cls)} - {"started"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"not fields of FaultReport: {sorted(unknown)}")
        data["permanent_keys"] = set(data.get("permanent_keys", ()))
        return cls(**data)

    def write(self, path: Path) -> None:
        """Record the wall time so far and write the report as JSON."""
        self.elapsed_s = time.monotonic() - self.started
        path.write_text(self.to_json())
