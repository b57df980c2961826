"""The bench's warm-function heap (``bench.common.frozen_heap``)."""

from __future__ import annotations

import gc

from bench.common import frozen_heap


def test_the_heap_is_frozen_inside_and_given_back_after() -> None:
    gc.unfreeze()
    with frozen_heap() as frozen:
        assert frozen > 1_000
        gc.collect()  # a full collection inside leaves the frozen objects alone
        # (an object freed by its reference count still leaves the frozen set)
        assert gc.get_freeze_count() > frozen - 100
    assert gc.get_freeze_count() == 0
