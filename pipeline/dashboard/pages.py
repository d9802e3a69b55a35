"""The pages: one HTML shell per page (``static/page.html``) that loads the page's script;
the script renders from the JSON API and follows the live stream. Every value put into the
shell is escaped; the scripts insert text with ``textContent`` only."""

from __future__ import annotations

import functools
import hashlib
import html
from importlib import resources
from string import Template
from typing import NamedTuple

STATIC = resources.files("pipeline.dashboard") / "static"


class Page(NamedTuple):
    name: str  # the script: static/<name>.js
    title: str
    nav: str  # the navigation entry it belongs to


PAGES = {
    "sessions": Page("sessions", "Sessions", "sessions"),
    "session": Page("session", "Session", "sessions"),
    "upload": Page("upload", "Upload", "upload"),
    "dead-letters": Page("deadletters", "Dead letters", "dead-letters"),
    "system": Page("system", "System", "system"),
}
NAV = (
    ("sessions", "", "Sessions"),
    ("upload", "upload", "Upload"),
    ("dead-letters", "dead-letters", "Dead letters"),
    ("system", "system", "System"),
)


@functools.cache
def _template() -> Template:
    return Template((STATIC / "page.html").read_text(encoding="utf-8"))


@functools.cache
def asset_version() -> str:
    """A hash of the shipped assets: their URLs change when they do (no stale caches)."""
    digest = hashlib.sha1()
    for entry in sorted(STATIC.iterdir(), key=lambda e: e.name):
        if entry.is_file():
            digest.update(entry.name.encode())
            digest.update(entry.read_bytes())
    return digest.hexdigest()[:10]


def render(page: Page, *, base: str, auth: str, prefix: str, argument: str = "") -> str:
    """The shell of ``page``; ``base`` is where the dashboard is mounted (ends with /)."""
    nav = "\n".join(
        f'<a href="{href}" data-nav="{key}"'
        + (' aria-current="page"' if key == page.nav else "")
        + f">{label}</a>"
        for key, href, label in NAV
    )
    esc = functools.partial(html.escape, quote=True)
    return _template().substitute(
        base=esc(base),
        title=esc(page.title),
        script=esc(page.name),
        version=asset_version(),
        auth=esc(auth),
        prefix=esc(prefix),
        argument=esc(argument),
        nav=nav,
    )
