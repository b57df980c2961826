"""The audit trail's buffering: a request's events go out in one write, per thread."""

from __future__ import annotations

import threading

from stratus.audit import AuditTrail, MemoryAuditStore


def test_a_requests_events_are_written_together_and_only_its_own() -> None:
    store = MemoryAuditStore()
    trail = AuditTrail(store, clock=lambda: 1_000.0)
    trail.record("t-a", "tool.executed", actor="key-1", details={"tool": "lookup_order"})
    trail.record("t-a", "tool.denied", actor="key-1", details={"tool": "refund"})
    other: list[int] = []
    thread = threading.Thread(target=lambda: other.append(trail.flush()))
    thread.start()
    thread.join()
    assert other == [0]  # another thread's request has nothing buffered
    assert trail.flush() == 2 and store.writes == 1
    assert trail.flush() == 0 and store.writes == 1
    events, cursor = store.events("t-a")
    assert [e.type for e in events] == ["tool.executed", "tool.denied"] and cursor is None
    assert store.events("t-b") == ([], None)


def test_a_failing_store_never_fails_the_request_and_discard_drops_the_buffer() -> None:
    class Broken(MemoryAuditStore):
        def put_events(self, events: object) -> None:
            raise RuntimeError("throttled")

    trail = AuditTrail(Broken())
    trail.record("t", "request.refused")
    assert trail.flush() == 1
    trail.record("t", "request.refused")
    trail.discard()
    assert trail.flush() == 0


def test_more_than_25_events_take_as_many_writes_as_batches_and_pages_follow() -> None:
    store = MemoryAuditStore()
    clock = iter(float(i) for i in range(100))
    trail = AuditTrail(store, clock=lambda: next(clock))
    for _ in range(30):
        trail.record("t", "tool.executed")
    assert trail.flush() == 30 and store.writes == 2
    page, cursor = store.events("t", limit=20)
    assert len(page) == 20 and cursor is not None
    rest, end = store.events("t", limit=20, cursor=cursor)
    assert len(rest) == 10 and end is None
    assert store.events("t", since=25.0)[0][0].at == 25.0
