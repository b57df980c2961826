"""The small protocols the gateway's domain modules talk to.

Keys are the item keys the domain builds (``BREAKER#...``, ``BUCKET#...``);
values are plain Python (``int``, ``float``, ``str``). Every method is one atomic
operation of the store: implementations must keep it atomic under threads (and,
for DynamoDB, across the fleet).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class BreakerStore(Protocol):
    """One circuit breaker state per key: ``failures``, ``opened_until``, ``probe_until``."""

    def read(self, key: str) -> dict[str, Any]:
        """The state (``{}`` if none); may be slightly stale."""
        ...

    def add_failure(self, key: str) -> int:
        """Count one more failure; the new count."""
        ...

    def reset(self, key: str) -> None:
        """Closed: no failures, no ``opened_until``, no ``probe_until``."""
        ...

    def open_until(self, key: str, until: float) -> None:
        """Open until ``until`` (and forget any probe)."""
        ...

    def claim_probe(self, key: str, opened_until: Any, now: float, probe_until: float) -> bool:
        """Win the half-open probe: only if still opened until ``opened_until`` and no
        probe runs past ``now``; then ``probe_until`` is set."""
        ...


@dataclass(frozen=True)
class BucketLoad:
    """What one key took in one window."""

    requests: int = 0
    tokens: int = 0


class BucketStore(Protocol):
    """Per-key request/token buckets per window, and per-key cool-downs."""

    def read(
        self, key_ids: Sequence[str], window: int
    ) -> tuple[dict[str, BucketLoad], dict[str, float]]:
        """The loads of the keys' buckets in ``window`` and their cool-downs (until)."""
        ...

    def take(
        self, key_id: str, window: int, tokens: int, *, rpm: int, tpm: int, expires_at: int
    ) -> bool:
        """One request of ``tokens``, if the bucket has fewer than ``rpm`` requests and
        room for ``tokens`` under ``tpm``; False (nothing taken) otherwise."""
        ...

    def add_tokens(self, key_id: str, window: int, delta: int) -> None:
        """Correct a bucket's tokens by ``delta`` (settlement)."""
        ...

    def untake(self, key_id: str, window: int, tokens: int) -> None:
        """Take back one request of ``tokens`` that never ran (a hit, a refusal)."""
        ...

    def cool_down(self, key_id: str, until: float, *, expires_at: int) -> None:
        """Skip this key until ``until``."""
        ...


@dataclass(frozen=True, order=True)
class OpenReservation:
    """One reservation recorded on a budget item and not settled or given back yet."""

    rid: str
    amount: int
    #: Epoch seconds after which an unsettled entry may be given back.
    expires_at: int


@dataclass(frozen=True)
class BudgetItem:
    """A budget item as stored: ``committed`` (spent + open), ``spent``, open entries, and
    the usage breakdown it carries (member -> counter -> value; see :data:`USAGE_PREFIX`)."""

    committed: int = 0
    spent: int = 0
    open: tuple[OpenReservation, ...] = ()
    usage: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    #: A finished unit's task item (:meth:`BudgetStore.close`): it takes no reservation.
    closed: bool = False


@dataclass(frozen=True)
class UsageAdd:
    """Counters to add to one member of an item's usage breakdown: an agent on a tenant's
    day and month items, a model on an agent's day item. Zero counters are not written."""

    member: str
    counts: Mapping[str, int]

    def nonzero(self) -> list[tuple[str, int]]:
        return [(name, int(value)) for name, value in self.counts.items() if value]


#: Open reservations are top-level attributes ``o#<rid>`` = ``{"a": nano-USD, "x": until}``
#: (a map attribute ``open`` would have to exist before ``SET open.#rid``: one more
#: write on every new item), counted in ``open_n``. About 40 bytes each: the default
#: bound (``budget_max_open_reservations``, 1000) keeps an item under 50 KB of its
#: 400 KB; at the bound a reservation is refused (``budget_exceeded`` with
#: ``details.reason = "too_many_open_reservations"``, ``Retry-After: 1``) once expired
#: entries were given back. Writes cost 1 WCU per KB of the item, so open entries
#: make a busy scope's writes dearer (100 in flight: about 4 KB, 4 WCU per write).
OPEN_PREFIX = "o#"

#: The usage an item carries is top-level counters ``u#<counter>#<member>`` (number),
#: added to with ``ADD`` by the settlement's own write (for the same reason as the open
#: entries: nested maps would need to exist first). Counter names hold no ``#``, so the
#: first ``#`` after the prefix ends the counter and the rest is the member, whatever it
#: holds (``-``, ``.``, ``:``, ``#``); expressions name them through
#: ExpressionAttributeNames only. Nine counters of a few dozen bytes per agent (tenant
#: items) or per model (agent items): a few hundred bytes per member.
USAGE_PREFIX = "u#"


def usage_attribute(counter: str, member: str) -> str:
    return f"{USAGE_PREFIX}{counter}#{member}"


#: Set on a finished job's task item; a reservation is refused on an item that has it.
CLOSED_ATTR = "closed_at"


def budget_item(item: Mapping[str, Any]) -> BudgetItem:
    """A stored budget item as the port shows it (open entries sorted by id)."""
    entries = sorted(
        OpenReservation(name[len(OPEN_PREFIX) :], int(value["a"]), int(value["x"]))
        for name, value in item.items()
        if name.startswith(OPEN_PREFIX)
    )
    usage: dict[str, dict[str, int]] = {}
    for name, value in item.items():
        if name.startswith(USAGE_PREFIX):
            counter, _, member = name[len(USAGE_PREFIX) :].partition("#")
            usage.setdefault(member, {})[counter] = int(value)
    return BudgetItem(
        committed=int(item.get("committed", 0)),
        spent=int(item.get("spent", 0)),
        open=tuple(entries),
        usage={member: usage[member] for member in sorted(usage)},
        closed=CLOSED_ATTR in item,
    )


class BudgetStore(Protocol):
    """Budget items (money in nano-USD integers) and tenants' own limits.

    Each open reservation is recorded on its item, in the same write that adds it
    to ``committed``; settling or giving it back removes the entry in the same
    write that takes it out of ``committed``, only if the entry is still there.
    """

    def tenant_limits(self, tenant_id: str) -> dict[str, Any]:
        """The tenant's ``daily_usd``/``monthly_usd`` (absent when not set)."""
        ...

    def set_tenant_limits(self, tenant_id: str, limits: Mapping[str, Any]) -> None:
        """Set the given limits, leaving the others as they are."""
        ...

    def reserve(
        self,
        key: str,
        rid: str,
        amount: int,
        *,
        room: int,
        limit: int,
        expires_at: int,
        hold_until: int,
        max_open: int,
    ) -> int | BudgetItem:
        """``committed += amount`` and the open entry ``rid`` (held until ``hold_until``),
        if ``committed <= room`` and fewer than ``max_open`` entries are open (or no item
        yet) and the item is not closed: the new ``committed``. Refused: nothing written,
        the item as it was."""
        ...

    def close(self, key: str, *, now: int, expires_at: int) -> BudgetItem:
        """Mark the item closed (a finished job's task item: no reservation is taken on it
        from now on; a new item expires at ``expires_at``), in one write that returns the
        item as it then is, with the entries still open for the caller to give back."""
        ...

    def settle(
        self,
        key: str,
        rid: str,
        *,
        reserved: int,
        actual: int,
        calls: int,
        usage: UsageAdd | None = None,
    ) -> int | None:
        """Close the open entry ``rid``: ``committed += actual - reserved``, ``spent +=
        actual``, ``calls += calls`` and ``usage`` added to the item's breakdown, in one
        write; the new ``spent``. None (nothing written) if the entry is not open
        (settled already, or given back)."""
        ...

    def record_late(
        self, key: str, actual: int, calls: int, *, usage: UsageAdd | None = None
    ) -> int:
        """The cost of a call whose entry was given back already: ``committed`` and
        ``spent`` ``+= actual``, ``calls += calls``, ``usage`` added; the new ``spent``."""
        ...

    def add_usage(self, key: str, usage: UsageAdd, *, expires_at: int) -> None:
        """Add ``usage`` to the item's breakdown, unconditionally (an item no limit is
        reserved on still carries usage; a new one expires at ``expires_at``)."""
        ...

    def give_back(self, key: str, entries: Sequence[OpenReservation]) -> list[OpenReservation]:
        """Release each of ``entries`` that is still open (``committed -= amount``);
        the ones this call released."""
        ...

    def read(self, keys: Sequence[str]) -> dict[str, BudgetItem]:
        """The items of ``keys`` that exist, with their usage (may be slightly stale)."""
        ...

    def mark_exhausted(self, key: str) -> int | None:
        """Set the once-only 100% alert marker: ``spent`` if this call set it, else None."""
        ...


@dataclass(frozen=True)
class StoredCompletion:
    completion: str
    expires_at: int


class CompletionRecords(Protocol):
    """Encoded completions by key, first writer wins."""

    def get(self, key: str) -> StoredCompletion | None: ...

    def put_if_absent(self, key: str, completion: str, *, expires_at: int, now: int) -> bool:
        """Store it unless a live entry (``expires_at >= now``) exists; True if stored."""
        ...


class RollupStore(Protocol):
    """Counter rows ``(pk, sk)`` that only ever grow by ``add``."""

    def add(self, pk: str, sk: str, counts: Mapping[str, int], *, expires_at: int) -> None: ...

    def rows(self, pk: str) -> list[dict[str, Any]]:
        """Every row of ``pk`` (with its ``sk``)."""
        ...

    def row(self, pk: str, sk: str) -> dict[str, Any]:
        """One row (``{}`` if none)."""
        ...


class SecretSource(Protocol):
    def get(self, name: str, *, max_age_s: int) -> str:
        """The secret's string, possibly cached up to ``max_age_s``."""
        ...


class AlertPublisher(Protocol):
    def publish(self, subject: str, message: dict[str, Any]) -> None: ...
