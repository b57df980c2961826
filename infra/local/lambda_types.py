"""What the local Lambda runtime runs and returns: function configs, results, errors."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

#: Variables a worker inherits from this process by default; everything else the
#: function needs must come from its configuration, as in AWS.
BASE_ENV_NAMES = (
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "TEMP",
    "TMP",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "SYSTEMROOT",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)
BASE_ENV_PREFIXES = ("AWS_", "COVERAGE_")


def default_base_env() -> dict[str, str]:
    """The minimal slice of this process's environment a worker starts from."""
    return {
        name: value
        for name, value in os.environ.items()
        if name in BASE_ENV_NAMES or name.startswith(BASE_ENV_PREFIXES)
    }


@dataclass(frozen=True)
class FunctionConfig:
    """One Lambda function as the local runtime needs it (a slice of ``FunctionPlan``)."""

    name: str
    handler: str
    environment: Mapping[str, str]
    timeout_s: float = 30.0
    memory_mb: int = 512
    #: The function's reserved concurrency; None = unreserved (the runtime's default cap).
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"{self.name}: timeout_s must be positive")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"{self.name}: max_concurrency must be at least 1")
        bad = [k for k, v in self.environment.items() if not isinstance(v, str)]
        if bad:
            raise TypeError(f"{self.name}: environment values must be strings: {bad}")
        # A private read-only copy: later changes to the caller's dict cannot leak in.
        object.__setattr__(self, "environment", MappingProxyType(dict(self.environment)))


@dataclass(frozen=True)
class InvokeResult:
    """What a synchronous Invoke returns: the payload, or Lambda's error object."""

    request_id: str
    #: The handler's return value, decoded from JSON (None on error, or if it returned None).
    payload: Any
    error: dict[str, Any] | None
    duration_ms: float
    cold_start: bool
    #: How long the handler's module took to import (cold starts only).
    init_duration_ms: float | None = None
    #: The version that ran it (``$LATEST``, or a label from ``add_version``).
    version: str = "$LATEST"

    @property
    def ok(self) -> bool:
        return self.error is None


class FunctionNotFound(KeyError):
    """No function of that name is configured (Lambda's ResourceNotFoundException)."""


class TooManyRequests(Exception):
    """Every worker of the function stayed busy for the whole wait (Lambda's 429)."""


class RuntimeStopped(RuntimeError):
    """The runtime was stopped; it starts no more workers."""
