"""The worker freezes what it loaded before training, so the collection after a round
scans only what the rounds made and still frees their reference cycles."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from lmworker.train import freeze_loaded_objects


class Node:
    def __init__(self) -> None:
        self.peer: Node | None = None


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    try:
        yield
    finally:
        gc.unfreeze()


def test_loaded_objects_are_frozen_and_a_round_s_cycles_are_still_freed(
    frozen_heap: None,
) -> None:
    loaded = Node()
    freeze_loaded_objects()
    assert gc.get_freeze_count() > 0
    frozen_before_the_round = gc.get_freeze_count()

    # What a round leaves: objects that refer to each other (DDP's module and reducer).
    a, b = Node(), Node()
    a.peer, b.peer = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()

    assert gone() is None
    assert gc.get_freeze_count() == frozen_before_the_round
    assert loaded.peer is None  # what was loaded stays alive and usable
