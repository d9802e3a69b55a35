"""Fault injection: S3 requests answered with an error, or their connection closed unanswered.

Faults queue up in the order they are added; each S3 request takes the first one that applies
to its operation (``ops``; None: every operation). A fault with a count is used up after that
many requests; one without stays until cleared. The per-request latency is the server's
(``S3Stub.latency_s``), applied before a fault is taken.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Fault:
    status: int
    """0 means: close the connection without answering."""
    code: str
    remaining: int | None
    """None means: until cleared."""
    ops: frozenset[str] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": "drop" if self.status == 0 else "error",
            "status": self.status,
            "code": self.code,
            "remaining": self.remaining,
            "ops": sorted(self.ops) if self.ops is not None else None,
        }


def parse_ops(ops: Iterable[str] | str | None) -> frozenset[str] | None:
    """Operation names from an iterable or a comma list; None (or nothing named): all."""
    if ops is None:
        return None
    if isinstance(ops, str):
        ops = ops.split(",")
    parsed = frozenset(op.strip() for op in ops if op.strip())
    return parsed or None


def check_status(status: int) -> int:
    if not 400 <= status <= 599:
        raise ValueError(f"fault status must be 4xx or 5xx, got {status}")
    return status


class FaultQueue:
    """The pending faults, in the order they apply."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def fail_next(
        self,
        n: int,
        status: int = 503,
        code: str = "SlowDown",
        *,
        ops: Iterable[str] | str | None = None,
    ) -> None:
        """Answer the next ``n`` S3 requests (of ``ops``, if given) with ``status``/``code``."""
        if n < 1:
            raise ValueError("n must be >= 1")
        self._faults.append(Fault(check_status(status), code, n, parse_ops(ops)))

    def fail_all(self, status: int, code: str, *, ops: Iterable[str] | str | None = None) -> None:
        """Answer every S3 request (of ``ops``, if given) with ``status``/``code`` until
        cleared."""
        self._faults.append(Fault(check_status(status), code, None, parse_ops(ops)))

    def drop_next(self, n: int, *, ops: Iterable[str] | str | None = None) -> None:
        """Close the connection of the next ``n`` S3 requests without answering."""
        if n < 1:
            raise ValueError("n must be >= 1")
        self._faults.append(Fault(0, "", n, parse_ops(ops)))

    def drop_all(self, *, ops: Iterable[str] | str | None = None) -> None:
        """Close the connection of every S3 request without answering, until cleared."""
        self._faults.append(Fault(0, "", None, parse_ops(ops)))

    def clear(self) -> None:
        self._faults.clear()

    def pending(self) -> list[dict[str, Any]]:
        """Pending faults, in the order they apply."""
        return [fault.to_dict() for fault in self._faults]

    def take(self, op: str) -> Fault | None:
        """The fault a request for ``op`` gets (counted down), or None."""
        for index, fault in enumerate(self._faults):
            if fault.ops is not None and op not in fault.ops:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._faults[index]
            return fault
        return None
