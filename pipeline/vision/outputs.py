"""A photo's outputs, each declared once: the registry that rendering, object keys, the result
document, the dashboard and the session's readiness all read.

An output is a :class:`PhotoOutput`: its name (the artifact name in ids and results.json's
``keys``), its file name under the photo's folder, its content type, which step makes it,
and — for the outputs ``render_photo`` makes — the function that turns the drawn
visualization into bytes. ``counts_toward_readiness``: whether the session's
``artifacts_ready`` waits for its upload (``render_photo`` registers such an output's artifact
before it reports the photo into the join, so the set is complete when ``aggregate`` marks it
final).

Adding an output to ``render_photo`` is one call::

    PHOTO_OUTPUTS.register(PhotoOutput("edges", "edges.png", "image/png", "render", draw_edges))

where ``draw_edges(picture, settings) -> bytes`` is pure (it must not change ``picture``: the
outputs are drawn one after the other from the same picture). Register it in every process
that renders or reads results (each role, the client) before use: the registry is per process.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from PIL import Image

from pipeline.settings import Settings

AVIF_CONTENT_TYPE = "image/avif"
JPEG_CONTENT_TYPE = "image/jpeg"

#: Which step makes an output: the client (the uploaded original), the analysis (gpu role,
#: from the decoded photo) or ``render_photo`` (cpu role, from the drawn visualization).
MadeBy = Literal["client", "analysis", "render"]
#: Draws one output from the visualization picture (RGB, at most ``visualization_max_px``).
Renderer = Callable[[Image.Image, Settings], bytes]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


@dataclass(frozen=True)
class PhotoOutput:
    """One output of a photo, declared once (see the module's docstring)."""

    name: str
    file_name: str
    content_type: str
    made_by: MadeBy
    render: Renderer | None = None
    counts_toward_readiness: bool = True

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(
                f"output name {self.name!r}: lower-case letters, digits and _ only, "
                "starting with a letter, at most 40 characters"
            )
        if not _FILE.match(self.file_name) or self.file_name in (".", ".."):
            raise ValueError(
                f"output {self.name}: file name {self.file_name!r} is not a plain name"
            )
        if (self.render is not None) != (self.made_by == "render"):
            raise ValueError(
                f"output {self.name}: a renderer is given exactly when made_by is 'render'"
            )


class PhotoOutputs:
    """The registry: outputs in the order they are made and listed."""

    def __init__(self, outputs: Sequence[PhotoOutput] = ()) -> None:
        self._outputs: dict[str, PhotoOutput] = {}
        for output in outputs:
            self.register(output)

    def register(self, output: PhotoOutput) -> PhotoOutput:
        """Add ``output``; a name or file name already taken is a ``ValueError``."""
        if output.name in self._outputs:
            raise ValueError(f"an output named {output.name!r} is already registered")
        taken = {o.file_name: o.name for o in self._outputs.values()}
        if output.file_name in taken:
            raise ValueError(
                f"output {output.name}: file name {output.file_name!r} is already "
                f"{taken[output.file_name]!r}'s"
            )
        self._outputs[output.name] = output
        return output

    def unregister(self, name: str) -> None:
        """Remove the output ``name`` (a ``KeyError`` names the registered ones)."""
        self[name]
        del self._outputs[name]

    @contextmanager
    def added(self, output: PhotoOutput) -> Iterator[PhotoOutput]:
        """``output`` registered for the block's duration (tests, temporary plug-ins)."""
        self.register(output)
        try:
            yield output
        finally:
            self._outputs.pop(output.name, None)

    def __getitem__(self, name: str) -> PhotoOutput:
        try:
            return self._outputs[name]
        except KeyError:
            known = ", ".join(self._outputs)
            raise KeyError(f"no photo output named {name!r} (registered: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._outputs

    def __iter__(self) -> Iterator[PhotoOutput]:
        return iter(list(self._outputs.values()))

    def names(self) -> tuple[str, ...]:
        return tuple(self._outputs)

    def made_by(self, step: MadeBy) -> list[PhotoOutput]:
        return [o for o in self._outputs.values() if o.made_by == step]

    def file_name(self, name: str, ext: str = "") -> str:
        """The file name of output ``name`` in its photo's folder; the original's carries the
        uploaded photo's extension ``ext``."""
        file_name = self[name].file_name
        return f"{file_name}.{ext}" if self[name].made_by == "client" and ext else file_name

    def content_types(self) -> dict[str, str]:
        """File suffix → content type, for the outputs whose file name has a suffix."""
        return {
            f".{o.file_name.rpartition('.')[2]}": o.content_type
            for o in self._outputs.values()
            if "." in o.file_name
        }


# The renderers import the drawing code when they run: the registry itself stays light (ids,
# the client and the command line read it; drawing pulls in numba).


def _visualization(picture: Image.Image, settings: Settings) -> bytes:
    from pipeline.vision.render import encode_avif

    return encode_avif(
        picture,
        quality=settings.avif_quality,
        speed=settings.avif_speed,
        max_threads=settings.avif_threads or None,
    )


def _processed_thumbnail(picture: Image.Image, settings: Settings) -> bytes:
    from pipeline.vision.render import make_thumbnail

    return make_thumbnail(
        picture, longest_side=settings.thumbnail_px, quality=settings.thumbnail_quality
    )


#: Every output a photo has. The original's content type is the uploaded photo's own.
PHOTO_OUTPUTS = PhotoOutputs(
    [
        PhotoOutput("original", "original", "application/octet-stream", "client"),
        PhotoOutput("thumbnail_original", "thumbnail_original.jpg", JPEG_CONTENT_TYPE, "analysis"),
        PhotoOutput("processed", "processed.avif", AVIF_CONTENT_TYPE, "render", _visualization),
        PhotoOutput(
            "thumbnail_processed",
            "thumbnail_processed.jpg",
            JPEG_CONTENT_TYPE,
            "render",
            _processed_thumbnail,
        ),
    ]
)
