"""Make moto's SQS report who sent a message (``SenderId``), as SQS does.

SQS sets a message's ``SenderId`` attribute to the sending principal's id (a role's
``AROA...:session``, a user's ``AIDA...``); a producer cannot choose it, which is what
lets the ingest function bind producers to tenants (:mod:`stratus.jobs.producers`).
moto 5 reports one constant for every message (``AIDAIT2UOQQY3AUEKVGXU``), whoever
sent it. The local cloud has no IAM principals, only access keys, so with
:func:`install` a message's ``SenderId`` is **the access key id of the request that
sent it** (the ``Credential`` of its SigV4 ``Authorization`` header): the identity the
local cloud's producer bindings use (``{"access_key": ...}`` entries in ``cdk.json``).

It changes moto's classes process-wide (the moto server process calls it at start,
:mod:`infra.local.moto_process`), is idempotent, and :func:`uninstall` reverts it.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any

#: SigV4: ``Authorization: AWS4-HMAC-SHA256 Credential=<access key id>/<date>/...``.
CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")
_SENDER = threading.local()
_PATCHED: list[tuple[Any, str, Any]] = []


def current_sender() -> str | None:
    """The access key id of the SendMessage(Batch) this thread is handling, if any."""
    return getattr(_SENDER, "access_key", None)


def access_key_of(headers: Any) -> str | None:
    """The access key id of a SigV4-signed request (any id, not only 20 capitals)."""
    match = CREDENTIAL.search(str(headers.get("Authorization") or ""))
    return match.group(1) if match else None


def install() -> None:
    """Every message sent from now on carries its sender's access key id as SenderId."""
    from moto.sqs.models import Message
    from moto.sqs.responses import SQSResponse

    if _PATCHED:
        return

    def sending(original: Any) -> Any:
        @functools.wraps(original)
        def wrapper(self: Any) -> Any:
            _SENDER.access_key = access_key_of(self.headers)
            try:
                return original(self)
            finally:
                _SENDER.access_key = None

        return wrapper

    original_init = Message.__init__

    @functools.wraps(original_init)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        sender = current_sender()
        if sender:
            self.sender_id = sender

    for owner, name, replacement in (
        (SQSResponse, "send_message", sending(SQSResponse.send_message)),
        (SQSResponse, "send_message_batch", sending(SQSResponse.send_message_batch)),
        (Message, "__init__", init),
    ):
        _PATCHED.append((owner, name, getattr(owner, name)))
        setattr(owner, name, replacement)


def uninstall() -> None:
    """Put moto's classes back as they were."""
    while _PATCHED:
        owner, name, original = _PATCHED.pop()
        setattr(owner, name, original)
