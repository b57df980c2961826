"""Which post-call waves wait for the end of their context, and what is handed over."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from stratus import after_response
from stratus.after_response import ExtensionsApi, Settler
from stratus.gateway_bookkeeping import deferred, post


@pytest.fixture
def settler(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settler]:
    """An extension as registered on Lambda; its thread is not started (nothing asks)."""
    settler = Settler(ExtensionsApi("127.0.0.1:9"), "ident")
    monkeypatch.setattr(after_response, "_settler", settler)
    yield settler


def test_a_final_answers_wave_starts_when_its_context_ends_and_is_handed_over(
    settler: Settler,
) -> None:
    written = threading.Event()
    with after_response.invocation("r-1"):
        with deferred():
            post([("write", written.set)], last=True)
            assert not written.wait(0.2)  # nothing competes with the answer being built
        assert written.wait(5)  # started when the context ended...
    handed = settler._handed["r-1"]  # ...and left to the extension, not waited for here
    assert len(handed) == 1 and handed[0].wait(5)


def test_a_wave_followed_by_tools_starts_at_once(settler: Settler) -> None:
    written = threading.Event()
    with after_response.invocation("r-2"), deferred():
        post([("write", written.set)], last=False)
        assert written.wait(5)  # overlaps the tools that follow


def test_a_nested_context_starts_its_waves_when_it_ends(settler: Settler) -> None:
    """The idempotent invoke: the wave overlaps the record's save in the outer context."""
    written = threading.Event()
    with after_response.invocation("r-3"), deferred():
        with deferred():
            post([("write", written.set)], last=True)
        assert written.wait(5)


def test_without_the_extension_a_final_wave_starts_at_once_and_is_waited_for() -> None:
    assert after_response.active() is None
    started, gate, written = threading.Event(), threading.Event(), threading.Event()

    def write() -> None:
        started.set()
        gate.wait(5)
        written.set()

    with after_response.invocation("r-4"), deferred():
        post([("write", write)], last=True)
        assert started.wait(5)  # not lazy: it overlaps whatever the handler does next
        gate.set()
    assert written.is_set()  # leaving the context waited for it


def test_a_handler_that_never_hands_over_does_not_hold_the_invoke(settler: Settler) -> None:
    """The extension asks for its next event at the deadline and counts the invoke late."""
    deadline_ms = int((time.time() + after_response.DEADLINE_MARGIN_S + 0.1) * 1000)
    settler.settle({"eventType": "INVOKE", "requestId": "r-5", "deadlineMs": deadline_ms})
    assert settler.late == 1
