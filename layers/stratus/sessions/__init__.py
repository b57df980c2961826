"""Stateful sessions: conversation state any Lambda instance can read, correct under concurrency.

* :mod:`~stratus.sessions.model`: keys, the head, messages, queue entries, errors;
* :mod:`~stratus.sessions.store`: the ports (``SessionStore``, ``TurnRunner``);
* :mod:`~stratus.sessions.dynamo` / :mod:`~stratus.sessions.memory`: the store on
  DynamoDB and in memory (same contract tests);
* :mod:`~stratus.sessions.context`: what a turn sends the model (summary, budget);
* :mod:`~stratus.sessions.service`: ``SessionService`` (turns, double-texting
  policies, the lock and its takeover);
* :mod:`~stratus.sessions.idempotent`: ``IdempotentMessages`` (``Idempotency-Key``).

The composition root (:meth:`stratus.composition.Runtime.session_service`) wires
them; nothing here knows Lambda or HTTP.
"""

from stratus.sessions.context import build_history, summarizer_spec
from stratus.sessions.dynamo import DynamoSessionStore
from stratus.sessions.idempotent import IdempotentMessages
from stratus.sessions.memory import MemorySessionStore
from stratus.sessions.model import (
    COUNTER_SK,
    HEAD_SK,
    MAX_METADATA_BYTES,
    MAX_STORED_CHARS,
    SUMMARY_SK,
    Head,
    LockBusy,
    LostLock,
    QueueEntry,
    Role,
    SessionExists,
    SessionGone,
    SessionKey,
    StoredMessage,
    TurnCommit,
    TurnView,
    msg_sk,
    queue_sk,
)
from stratus.sessions.service import SessionService
from stratus.sessions.store import SessionStore, TurnRunner

__all__ = [
    "COUNTER_SK",
    "HEAD_SK",
    "MAX_METADATA_BYTES",
    "MAX_STORED_CHARS",
    "SUMMARY_SK",
    "DynamoSessionStore",
    "Head",
    "IdempotentMessages",
    "LockBusy",
    "LostLock",
    "MemorySessionStore",
    "QueueEntry",
    "Role",
    "SessionExists",
    "SessionGone",
    "SessionKey",
    "SessionService",
    "SessionStore",
    "StoredMessage",
    "TurnCommit",
    "TurnRunner",
    "TurnView",
    "build_history",
    "msg_sk",
    "queue_sk",
    "summarizer_spec",
]
