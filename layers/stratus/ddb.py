"""The one way the runtime reaches DynamoDB: :class:`Table` over the low-level client.

Every DynamoDB adapter of the runtime uses this module, and nothing else:

* the low-level client, because it is thread-safe (boto3 resources are not, and
  the gateway's stores run on many threads at once);
* plain Python values in and out: items, keys and ``ExpressionAttributeValues``
  (keys with their leading colon, as in the expression) are marshalled here;
  floats become ``Decimal``; numbers come back as ``Decimal``;
* one typed failure per outcome: a condition that did not hold raises
  :class:`ConditionFailed` (with the item as it was, when DynamoDB returned it),
  a cancelled transaction raises :class:`TransactionCancelled` with the reason of
  each of its items. Nothing else inspects error codes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypedDict

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from typing_extensions import Unpack

_SER = TypeSerializer()
_DE = TypeDeserializer()

CONDITION_FAILED = "ConditionalCheckFailed"


class ConditionFailed(Exception):
    """A write's condition expression did not hold; nothing was written."""

    def __init__(self, item: dict[str, Any] | None = None) -> None:
        super().__init__("the condition of the write did not hold")
        #: The item as it was (``ReturnValuesOnConditionCheckFailure=ALL_OLD``), if asked.
        self.item = item


class TransactionCancelled(Exception):
    """A transaction was cancelled; ``reasons[i]`` is the code of item ``i`` (or ``"None"``)."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__(f"transaction cancelled: {', '.join(reasons)}")
        self.reasons = list(reasons)

    def condition_failed_at(self, index: int) -> bool:
        return len(self.reasons) > index and self.reasons[index] == CONDITION_FAILED

    @property
    def any_condition_failed(self) -> bool:
        return CONDITION_FAILED in self.reasons


# -- marshalling ---------------------------------------------------------------------


def plain_number(value: Any) -> Any:
    """What DynamoDB can store for ``value``: floats as ``Decimal``, in plain notation."""
    if isinstance(value, float):
        value = Decimal(str(value))
    if isinstance(value, Decimal):
        # Plain notation: quantized zeros print as "0E-8", which not every parser takes.
        return Decimal(format(value, "f"))
    return value


def marshal(data: Mapping[str, Any]) -> dict[str, Any]:
    """A DynamoDB attribute map from plain values; ``None`` values are left out."""
    return {
        name: _SER.serialize(_deep_number(value))
        for name, value in data.items()
        if value is not None
    }


def unmarshal(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """Plain values from a DynamoDB attribute map (numbers as ``Decimal``)."""
    return {name: _DE.deserialize(value) for name, value in (raw or {}).items()}


def _deep_number(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_number(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_deep_number(v) for v in value]
    return plain_number(value)


def _values(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """``ExpressionAttributeValues``: keys keep their colon; ``None`` is a real NULL here."""
    return {name: _SER.serialize(_deep_number(value)) for name, value in (values or {}).items()}


class Expression(TypedDict, total=False):
    """The expression parts of a write: a condition and the names and values it uses."""

    condition: str | None
    names: Mapping[str, str] | None
    values: Mapping[str, Any] | None


def _expression_args(
    *,
    condition: str | None = None,
    names: Mapping[str, str] | None = None,
    values: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if condition:
        args["ConditionExpression"] = condition
    if names:
        args["ExpressionAttributeNames"] = dict(names)
    if values:
        args["ExpressionAttributeValues"] = _values(values)
    return args


def _old_on_failure(args: dict[str, Any], wanted: bool) -> dict[str, Any]:
    return {**args, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"} if wanted else args


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    #: Pass back as ``start`` for the next page; ``None`` when there is none.
    last_key: dict[str, Any] | None = None


@dataclass
class Transaction:
    """Items of one ``TransactWriteItems`` call, built with :class:`Table`'s ``*_op``."""

    items: list[dict[str, Any]] = field(default_factory=list)

    def add(self, op: dict[str, Any]) -> int:
        """Add an item; its index (what :meth:`TransactionCancelled.condition_failed_at` takes)."""
        self.items.append(op)
        return len(self.items) - 1


class Table:
    """One DynamoDB table through the low-level client, with plain values."""

    def __init__(self, name: str, client: Any) -> None:
        self.name = name
        self.client = client

    def describe(self) -> dict[str, Any]:
        """``DescribeTable`` (what a health check asks)."""
        description: dict[str, Any] = self.client.describe_table(TableName=self.name)["Table"]
        return description

    # -- single items

    def get(
        self,
        key: Mapping[str, Any],
        *,
        consistent: bool = True,
        projection: str | None = None,
        names: Mapping[str, str] | None = None,
    ) -> dict[str, Any] | None:
        args: dict[str, Any] = {
            "TableName": self.name,
            "Key": marshal(key),
            "ConsistentRead": consistent,
        }
        if projection:
            args["ProjectionExpression"] = projection
        if names:
            args["ExpressionAttributeNames"] = dict(names)
        raw = self.client.get_item(**args).get("Item")
        return unmarshal(raw) if raw else None

    def put(
        self,
        item: Mapping[str, Any],
        *,
        return_old_on_failure: bool = False,
        **expr: Unpack[Expression],
    ) -> None:
        args = self.put_op(item, **expr)["Put"]
        self._write(self.client.put_item, _old_on_failure(args, return_old_on_failure))

    def update(
        self,
        key: Mapping[str, Any],
        expression: str,
        *,
        returns: str = "ALL_NEW",
        return_old_on_failure: bool = False,
        **expr: Unpack[Expression],
    ) -> dict[str, Any]:
        """Apply ``expression``; the attributes ``returns`` names (``{}`` for ``NONE``)."""
        args = self.update_op(key, expression, **expr)
        args = _old_on_failure(args["Update"], return_old_on_failure)
        response = self._write(self.client.update_item, {**args, "ReturnValues": returns})
        return unmarshal(response.get("Attributes"))

    def delete(self, key: Mapping[str, Any], **expr: Unpack[Expression]) -> None:
        args = self.delete_op(key, **expr)["Delete"]
        self._write(self.client.delete_item, args)

    @staticmethod
    def _write(call: Any, args: dict[str, Any]) -> Any:
        try:
            return call(**args)
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                old: Any = exc.response.get("Item")
                raise ConditionFailed(unmarshal(old) if old else None) from None
            raise

    # -- many items

    def query(
        self,
        key_condition: str,
        *,
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
        filter: str | None = None,
        consistent: bool = True,
        forward: bool = True,
        limit: int | None = None,
        start: Mapping[str, Any] | None = None,
        index: str | None = None,
        projection: str | None = None,
    ) -> Page:
        """One page of a query."""
        args: dict[str, Any] = {
            "TableName": self.name,
            "KeyConditionExpression": key_condition,
            "ScanIndexForward": forward,
            **_expression_args(names=names, values=values),
        }
        if index:
            args["IndexName"] = index
        else:
            args["ConsistentRead"] = consistent
        if filter:
            args["FilterExpression"] = filter
        if limit is not None:
            args["Limit"] = limit
        if start:
            args["ExclusiveStartKey"] = marshal(start)
        if projection:
            args["ProjectionExpression"] = projection
        response = self.client.query(**args)
        last = response.get("LastEvaluatedKey")
        return Page(
            items=[unmarshal(raw) for raw in response.get("Items", [])],
            last_key=unmarshal(last) if last else None,
        )

    def query_all(self, key_condition: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every item of a query, page after page (``limit`` is a page size here)."""
        start: Mapping[str, Any] | None = kwargs.pop("start", None)
        while True:
            page = self.query(key_condition, start=start, **kwargs)
            yield from page.items
            if page.last_key is None:
                return
            start = page.last_key

    def scan_all(
        self,
        *,
        filter: str | None = None,
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
        projection: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every item of the table, page after page (maintenance paths only, never requests)."""
        args: dict[str, Any] = {
            "TableName": self.name,
            **_expression_args(names=names, values=values),
        }
        if filter:
            args["FilterExpression"] = filter
        if projection:
            args["ProjectionExpression"] = projection
        while True:
            response = self.client.scan(**args)
            yield from (unmarshal(raw) for raw in response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            if not last:
                return
            args["ExclusiveStartKey"] = last

    def batch_get(
        self, keys: Sequence[Mapping[str, Any]], *, consistent: bool = False
    ) -> list[dict[str, Any]]:
        """The items of ``keys`` that exist (any order); unprocessed keys are asked again."""
        items: list[dict[str, Any]] = []
        for offset in range(0, len(keys), 100):
            pending: dict[str, Any] = {
                self.name: {
                    "Keys": [marshal(k) for k in keys[offset : offset + 100]],
                    "ConsistentRead": consistent,
                }
            }
            for _ in range(5):
                response = self.client.batch_get_item(RequestItems=pending)
                items.extend(unmarshal(raw) for raw in response["Responses"].get(self.name, []))
                pending = response.get("UnprocessedKeys") or {}
                if not pending:
                    break
        return items

    def batch_delete(
        self,
        keys: Sequence[Mapping[str, Any]],
        *,
        sleep: Callable[[float], None] = time.sleep,
        attempts: int = 10,
    ) -> None:
        """Delete every key (25 per request); unprocessed ones are retried with backoff."""
        for offset in range(0, len(keys), 25):
            requests = [{"DeleteRequest": {"Key": marshal(k)}} for k in keys[offset : offset + 25]]
            for attempt in range(attempts):
                reply = self.client.batch_write_item(RequestItems={self.name: requests})
                requests = reply.get("UnprocessedItems", {}).get(self.name, [])
                if not requests:
                    break
                sleep(min(1.0, 0.05 * 2**attempt))
            else:
                raise RuntimeError(f"{len(requests)} deletes left unprocessed in {self.name}")

    # -- transaction items

    def put_op(self, item: Mapping[str, Any], **expr: Unpack[Expression]) -> dict[str, Any]:
        args = _expression_args(**expr)
        return {"Put": {"TableName": self.name, "Item": marshal(item), **args}}

    def update_op(
        self, key: Mapping[str, Any], expression: str, **expr: Unpack[Expression]
    ) -> dict[str, Any]:
        args = _expression_args(**expr)
        return {
            "Update": {
                "TableName": self.name,
                "Key": marshal(key),
                "UpdateExpression": expression,
                **args,
            }
        }

    def delete_op(self, key: Mapping[str, Any], **expr: Unpack[Expression]) -> dict[str, Any]:
        args = _expression_args(**expr)
        return {"Delete": {"TableName": self.name, "Key": marshal(key), **args}}

    def check_op(
        self,
        key: Mapping[str, Any],
        condition: str,
        *,
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        args = _expression_args(condition=condition, names=names, values=values)
        return {"ConditionCheck": {"TableName": self.name, "Key": marshal(key), **args}}

    def transact(self, transaction: Transaction | Sequence[dict[str, Any]]) -> None:
        """Run a transaction (its items may name other tables of the same client)."""
        transact(self.client, transaction)


def transact(client: Any, transaction: Transaction | Sequence[dict[str, Any]]) -> None:
    """``TransactWriteItems``; a cancellation raises :class:`TransactionCancelled`."""
    items = transaction.items if isinstance(transaction, Transaction) else list(transaction)
    try:
        client.transact_write_items(TransactItems=items)
    except ClientError as exc:
        if _code(exc) != "TransactionCanceledException":
            raise
        reasons = exc.response.get("CancellationReasons") or []
        raise TransactionCancelled([str(r.get("Code") or "None") for r in reasons]) from None
