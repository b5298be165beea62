"""Bounded iteration over streams too big to hold: fixed-size chunks, and a window of work in flight.

Every stage that streams (the ingest's article batches, the sync's downloads, embedding images and
captions in batches) goes through these two, so memory is bounded by a chunk or a window, never by
the corpus.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last one shorter), read lazily."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def in_order_window(submit: Callable[[T], Any], items: Iterable[T], window: int) -> Iterator[Any]:
    """Submit each item (`submit` returns anything with `.result()`: a future, a Prefect task
    future), at most `window` in flight, and yield the results in submission order."""
    pending: deque[Any] = deque()
    for item in items:
        pending.append(submit(item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
