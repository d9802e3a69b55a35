"""How uploads produced together are cut into io jobs: by count and by bytes."""

from __future__ import annotations

from pipeline.runtime.uploads import io_batches
from pipeline.settings import Settings


def cut(sizes: list[int], *, count: int, max_bytes: int) -> list[list[int]]:
    settings = Settings(io_batch_max=count, io_batch_max_bytes=max_bytes)
    return io_batches(sizes, lambda size: size, settings)


def test_small_objects_go_by_count() -> None:
    assert cut([1] * 7, count=3, max_bytes=100) == [[1, 1, 1], [1, 1, 1], [1]]


def test_large_objects_go_by_bytes_in_order() -> None:
    assert cut([4, 4, 4, 4, 4], count=50, max_bytes=10) == [[4, 4], [4, 4], [4]]
    assert cut([2, 9, 1, 1], count=50, max_bytes=10) == [[2], [9, 1], [1]]


def test_an_object_over_the_byte_limit_goes_alone() -> None:
    assert cut([1, 30, 1], count=50, max_bytes=10) == [[1], [30], [1]]


def test_nothing_to_cut() -> None:
    assert cut([], count=3, max_bytes=10) == []
