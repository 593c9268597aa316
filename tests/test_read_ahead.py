"""vsyn.render.read_ahead: chunks produced in a background thread, one ahead of the encoder."""

from __future__ import annotations

import threading
import time

import pytest

from vsyn.render import read_ahead


def _producers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "vsyn-render-ahead"]


def test_same_items_in_the_same_order_and_produced_ahead() -> None:
    made: list[int] = []

    def chunks():
        for i in range(20):
            made.append(i)
            yield i

    got = []
    for item in read_ahead(chunks(), depth=2):
        got.append(item)
        if item == 5:
            deadline = time.monotonic() + 5
            while len(made) < 9 and time.monotonic() < deadline:  # 0-5 consumed, 2 queued, 1 waiting to be put
                time.sleep(0.01)
            assert len(made) == 9  # the producer ran ahead while this chunk was "encoded", and no further
    assert got == list(range(20))
    assert not _producers()


def test_a_producer_error_is_raised_to_the_consumer() -> None:
    def chunks():
        yield 1
        raise ValueError("render failed")

    it = read_ahead(chunks())
    assert next(it) == 1
    with pytest.raises(ValueError, match="render failed"):
        next(it)
    assert not _producers()


def test_stopping_early_stops_the_producer() -> None:
    made: list[int] = []

    def endless():
        i = 0
        while True:
            made.append(i)
            yield i
            i += 1

    it = read_ahead(endless())
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert not _producers()
    count = len(made)
    time.sleep(0.2)
    assert len(made) == count <= 5  # nothing rendered after the consumer left
