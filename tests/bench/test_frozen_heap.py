"""The bench's warm-function heap (``bench.common.frozen_heap``)."""

from __future__ import annotations

import gc

from bench.common import frozen_heap


def test_the_heap_is_frozen_inside_and_given_back_after() -> None:
    gc.unfreeze()
    with frozen_heap() as frozen:
        assert frozen == gc.get_freeze_count() > 1_000
        gc.collect()  # a full collection inside leaves the frozen objects alone
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == 0
