"""Where plantpipe's S3 client differs from a plain aioboto3 client, and why.

Two per-request costs of botocore that buy nothing for the io role are removed from the one
client of each process (:func:`tune_client`); every request still goes to the same endpoint
with the same signature and the same integrity checks.

**Endpoint resolution that hits botocore's cache.** botocore resolves the endpoint of every
request by evaluating S3's endpoint ruleset with the request's parameters, behind an LRU cache
keyed on those parameters. S3's ruleset declares ``Key``, ``Prefix`` and ``CopySource``
although no rule reads them, so with ``Key`` among the parameters the cache misses for every
new object key and the whole ruleset is evaluated per request (a fifth of the SDK's CPU per
``put_object``). botocore drops these parameters itself from a later release on
(boto/botocore#3528, fixed by #3692); the botocore that aioboto3 pins does not have that yet.
:func:`drop_unread_endpoint_params` removes, from one client's resolver, those of the three
that the loaded ruleset never references (checked against the ruleset itself, so a ruleset
that starts reading one keeps it).

**``Expect: 100-continue`` only for large bodies.** botocore sends every PutObject and
UploadPart body behind ``Expect: 100-continue``: the headers go first, and the body only once
S3 has answered ``100 Continue`` — one more round trip per request, which for small objects
costs more than it can save (the body sent in vain when S3 refuses the request). The header is
kept from ``s3_expect_continue_bytes`` (2 MiB, the threshold the AWS SDK for Go v2 uses for
the same header) on: a large body is still not sent to an S3 that would refuse it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from botocore.loaders import create_loader
from botocore.utils import determine_content_length

from pipeline.logs import get_logger
from pipeline.settings import Settings

log = get_logger("pipeline.storage")

#: Parameters S3's ruleset declares without reading them (the list botocore itself drops).
UNREAD_CANDIDATES: Final = ("Key", "Prefix", "CopySource")


def tune_client(client: Any, settings: Settings) -> None:
    """Both changes, on one aiobotocore S3 client."""
    drop_unread_endpoint_params(client)
    expect_continue_from(client, settings.s3_expect_continue_bytes)


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


def expect_continue_from(client: Any, threshold: int) -> None:
    """Bodies under ``threshold`` bytes go without ``Expect: 100-continue`` (0: every body)."""

    def small_bodies_go_at_once(params: dict[str, Any], **_: Any) -> None:
        headers = params.get("headers", {})
        if "Expect" not in headers:
            return
        size = determine_content_length(params.get("body"))
        if size is not None and size < threshold:
            del headers["Expect"]

    # After botocore's own before-call handler, which adds the header to every body.
    client.meta.events.register_last("before-call.s3", small_bodies_go_at_once)
