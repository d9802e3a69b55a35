"""The web dashboard: sessions live, each photo with its visualization and counts, uploads,
dead letters (retry, discard), queues, workers, the S3 breaker and Redis — and the JSON API
under ``/api/`` behind every page.

``plantpipe dashboard`` serves it; ``create_app(settings)`` mounts it in your own ASGI
service. It reads through :mod:`pipeline.client` and :mod:`pipeline.state` and is imported
by nothing below it. Needs the ``[dashboard]`` extra (Starlette, uvicorn, python-multipart).

Modules: ``app`` (create_app, pages, errors), ``api`` (the JSON API, the live stream),
``hub`` (one feed reader per process), ``detail`` (the session page's document), ``files``
(images from the store), ``upload``, ``actions`` (dead letters, audit), ``system``,
``security`` (binding, tokens, headers), ``pages`` (HTML shells), ``server`` (uvicorn),
``static/`` (the pages' scripts and styles: no build step, nothing from elsewhere).
"""

from __future__ import annotations

from pipeline.dashboard.app import create_app

__all__ = ["create_app"]
