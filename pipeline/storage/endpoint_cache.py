"""S3 endpoint resolution that hits botocore's cache: parameters no rule reads are dropped.

botocore resolves the endpoint of every request by evaluating S3's endpoint ruleset with the
request's parameters, behind an LRU cache keyed on those parameters. S3's ruleset declares
``Key``, ``Prefix`` and ``CopySource`` although no rule reads them, so with ``Key`` among the
parameters the cache misses for every new object key and the whole ruleset is evaluated per
request: about a quarter of the SDK's CPU per ``put_object`` (bench/RESULTS.md, section 1).
botocore drops these parameters itself from a later release on (boto/botocore#3528, fixed by
#3692), which the aiobotocore that aioboto3 pins does not have yet.

:func:`drop_unread_endpoint_params` does the same for one client: it removes, from that
client's resolver only, the parameters of that list that the loaded ruleset never references
(checked against the ruleset itself, so a ruleset that starts reading one keeps it). The
endpoint of every request is unchanged; only the cache starts to hit. Where the client has no
such resolver (another SDK release), nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from botocore.loaders import create_loader

from pipeline.logs import get_logger

log = get_logger("pipeline.storage")

#: Parameters S3's ruleset declares without reading them (the list botocore itself drops).
UNREAD_CANDIDATES: Final = ("Key", "Prefix", "CopySource")


def ruleset_refs(node: Any) -> Iterator[str]:
    """Every parameter name a ruleset (its JSON) reads through ``{"ref": name}``."""
    if isinstance(node, dict):
        ref = node.get("ref")
        if isinstance(ref, str):
            yield ref
        for value in node.values():
            yield from ruleset_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from ruleset_refs(value)


def unread_params(declared: Any, ruleset: Any) -> list[str]:
    """The candidates that ``declared`` (the ruleset's parameters) has and no rule reads."""
    read = set(ruleset_refs(ruleset.get("rules", [])))
    return [name for name in UNREAD_CANDIDATES if name in declared and name not in read]


def drop_unread_endpoint_params(client: Any) -> list[str]:
    """Make ``client``'s endpoint cache hit across object keys; returns what was dropped."""
    resolver: Any = getattr(client, "_ruleset_resolver", None)
    declared = getattr(resolver, "_param_definitions", None)
    if resolver is None or not isinstance(declared, dict):
        log.info("s3.endpoint_cache.unchanged", reason="no ruleset resolver on this client")
        return []
    ruleset = create_loader().load_service_model(
        client.meta.service_model.service_name,
        "endpoint-rule-set-1",
        client.meta.service_model.api_version,
    )
    dropped = unread_params(declared, ruleset)
    if dropped:
        # A copy of the resolver's own: the ruleset object (and other clients) keep theirs.
        resolver._param_definitions = {
            name: value for name, value in declared.items() if name not in dropped
        }
    log.debug("s3.endpoint_cache", dropped=dropped)
    return dropped
