"""Make moto's DynamoDB answer one request at a time, as atomically as DynamoDB does.

DynamoDB guarantees that a conditional write, an ``UpdateItem ... ADD`` and a
``TransactWriteItems`` are atomic. moto (5.x) does not, once requests come from
several threads (the in-process mock under a threaded test, or moto's threaded
server): ``update_item`` reads the item, checks the condition and writes it back
with no lock, so two conditional writes can both pass; and
``transact_write_items`` backs up *whole tables* with ``deepcopy`` and, on a
cancelled transaction, puts the backups back, undoing every write other threads
made in between. Code that is correct on DynamoDB then loses updates on moto.

:func:`install` serialises moto's DynamoDB request handling behind one lock.
That is no stronger than DynamoDB (each request is atomic there, too; concurrent
requests to *different* items are not serialised, but nothing may rely on that
either), so tests that pass with it exercise real DynamoDB semantics. It changes
moto's classes process-wide and is idempotent; :func:`uninstall` reverts it.

It also takes two costs off moto's request path that grow with the data, not with
the request (a 1,000-job soak spent most of its time there):

* ``transact_write_items`` deep-copies every table it touches before it starts, to
  put them back if the transaction is cancelled: O(items in the table) per
  transaction. Under the lock nothing else writes meanwhile, so backing up the
  (at most 100) items the transaction names and putting those back is the same
  rollback at O(items in the transaction).
* The server lists moto's package directory on disk for every request to find the
  service (``list_of_moto_modules``); the list never changes while it runs.
"""

from __future__ import annotations

import copy
import functools
import threading
from typing import Any

_LOCK = threading.RLock()
_ORIGINAL: Any = None
_PATCHED: list[tuple[Any, str, Any]] = []


def install() -> None:
    """Serialise every DynamoDB request moto handles in this process."""
    global _ORIGINAL
    from moto.dynamodb.responses import DynamoHandler

    if _ORIGINAL is not None:
        return
    original = DynamoHandler.call_action

    @functools.wraps(original)
    def call_action(self: Any) -> Any:
        with _LOCK:
            return original(self)

    _ORIGINAL = original
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    _install_item_backups()
    _install_module_list_cache()


def uninstall() -> None:
    global _ORIGINAL
    from moto.dynamodb.responses import DynamoHandler

    if _ORIGINAL is not None:
        DynamoHandler.call_action = _ORIGINAL  # type: ignore[method-assign]
        _ORIGINAL = None
    while _PATCHED:
        owner, name, value = _PATCHED.pop()
        setattr(owner, name, value)


def _patch(owner: Any, name: str, value: Any) -> None:
    _PATCHED.append((owner, name, getattr(owner, name)))
    setattr(owner, name, value)


class _TablesNotCopied:
    """``copy`` as moto's DynamoDB backend sees it: a table "copy" is the table itself.

    Only ``transact_write_items`` deep-copies whole tables (its rollback backup);
    the wrapper below backs up the transaction's items instead. Everything else is
    the real :mod:`copy`.
    """

    def __init__(self, table_type: type) -> None:
        self._table_type = table_type

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        if isinstance(value, self._table_type):
            return value
        return copy.deepcopy(value, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


def _item_address(backend: Any, entry: Any) -> tuple[Any, Any, Any] | None:
    """(table, hash value, range value) of one transaction entry; None if it names none."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    if not isinstance(entry, dict) or len(entry) != 1:
        return None
    op = next(iter(entry.values()))
    if not isinstance(op, dict):
        return None
    table = backend.tables.get(op.get("TableName"))
    key = op.get("Item") if "Put" in entry else op.get("Key")
    if table is None or not isinstance(key, dict) or table.hash_key_attr not in key:
        return None
    hash_value = DynamoType(key[table.hash_key_attr])
    range_value = None
    if table.range_key_attr is not None:
        if table.range_key_attr not in key:
            return None
        range_value = DynamoType(key[table.range_key_attr])
    return table, hash_value, range_value


def _restore(table: Any, hash_value: Any, range_value: Any, item: Any) -> None:
    if range_value is None:
        if item is None:
            table.items.pop(hash_value, None)
        else:
            table.items[hash_value] = item
    elif item is None:
        table.items.get(hash_value, {}).pop(range_value, None)
    else:
        table.items[hash_value][range_value] = item


def _install_item_backups() -> None:
    import moto.dynamodb.models as models
    from moto.dynamodb.models.table import Table

    original = models.DynamoDBBackend.transact_write_items

    @functools.wraps(original)
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> Any:
        backups = []
        for entry in transact_items[:100]:
            address = _item_address(self, entry)
            if address is not None:
                table, hash_value, range_value = address
                current = table.get_item(hash_value, range_value)
                backups.append((*address, copy.deepcopy(current)))
        try:
            return original(self, transact_items)
        except Exception:
            for table, hash_value, range_value, item in reversed(backups):
                _restore(table, hash_value, range_value, item)
            raise

    _patch(models, "copy", _TablesNotCopied(Table))
    _patch(models.DynamoDBBackend, "transact_write_items", transact_write_items)


def _install_module_list_cache() -> None:
    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    _patch(backends, "list_of_moto_modules", lambda: modules)
