"""Serve the AppConfigData API from moto's AppConfig, as AWS documents it.

moto 5.2 keeps AppConfig applications, configuration profiles and hosted configuration
versions, but has no environments, no deployments and no AppConfigData (the data plane
Powertools' ``AppConfigStore`` reads). With :func:`install` (the moto server process
calls it at start, :mod:`infra.local.moto_process`) the same boto3 ``appconfigdata`` code
that runs on AWS runs locally:

* ``POST /configurationsessions`` (``StartConfigurationSession``): the application
  and profile by name or id; the environment by any non-empty name (moto has no
  environments: every environment serves the profile); an optional
  ``RequiredMinimumPollIntervalInSeconds`` (15..86400). Answers 201 with an
  ``InitialConfigurationToken``.
* ``GET /configuration?configuration_token=T`` (``GetLatestConfiguration``): the
  latest hosted configuration version of the profile is the deployed one (a new
  version applies at once, as if every deployment were all-at-once). The body is its
  content with its ``Content-Type`` and ``Version-Label``, or EMPTY when this session
  already received that version; ``Next-Poll-Configuration-Token`` and
  ``Next-Poll-Interval-In-Seconds`` (the session's required interval, else 60) always.
* Errors as the API has them: a token that is unknown, already used, or expired (24 h)
  and a poll sooner than the session's required minimum interval are 400
  ``BadRequestException``; an unknown application or profile, or a profile with no
  hosted version yet, is 404 ``ResourceNotFoundException``.

boto3 signs AppConfigData requests as the ``appconfig`` service, so moto's server sends
them to its AppConfig routes; with ``AWS_ENDPOINT_URL_APPCONFIGDATA`` naming the moto
server the client never needs the ``appconfigdata.`` host. :func:`install` adds the two
routes to moto's AppConfig URL map before the server builds it; it is idempotent and
:func:`uninstall` reverts it.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

SESSIONS_PATH = "{0}/configurationsessions$"
CONFIGURATION_PATH = "{0}/configuration$"
DEFAULT_POLL_INTERVAL_S = 60
MIN_POLL_INTERVAL_S = 15
MAX_POLL_INTERVAL_S = 86_400
TOKEN_TTL_S = 24 * 3600

_PATCHED: list[str] = []


class DataError(Exception):
    """An AppConfigData error: HTTP status, error code and message."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.extra = extra

    def response(self) -> tuple[int, dict[str, str], str]:
        body = {"Message": str(self), "message": str(self), **self.extra}
        headers = {"Content-Type": "application/json", "x-amzn-ErrorType": self.code}
        return self.status, headers, json.dumps(body)


def bad_request(message: str) -> DataError:
    return DataError(400, "BadRequestException", message, Reason="InvalidParameters")


def not_found(kind: str, message: str) -> DataError:
    return DataError(404, "ResourceNotFoundException", message, ResourceType=kind)


@dataclass
class Session:
    """One configuration session: what it tracks and what it was last given."""

    account: str
    region: str
    application_id: str
    profile_id: str
    environment: str
    interval_s: int
    required: bool
    last_version: int | None = None
    last_poll: float | None = None


@dataclass
class Sessions:
    """Live tokens -> (session, issued at); each token is good for one call."""

    tokens: dict[str, tuple[Session, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    clock: Any = time.monotonic

    def issue(self, session: Session) -> str:
        token = secrets.token_urlsafe(48)
        now = self.clock()
        with self.lock:
            self.tokens[token] = (session, now)
            # Tokens nobody will use again expire; keep the map from growing forever.
            stale = [t for t, (_, at) in self.tokens.items() if now - at > TOKEN_TTL_S]
            for old in stale:
                del self.tokens[old]
        return token

    def redeem(self, token: str) -> Session:
        with self.lock:
            entry = self.tokens.pop(token, None)
        if entry is None:
            raise bad_request("The configuration token is not valid (unknown or already used)")
        session, issued = entry
        if self.clock() - issued > TOKEN_TTL_S:
            raise bad_request("The configuration token has expired")
        return session


SESSIONS = Sessions()


# -- moto's AppConfig state ---------------------------------------------------------------


def _backend(account: str, region: str) -> Any:
    from moto.appconfig.models import appconfig_backends

    return appconfig_backends[account][region]


def _find(items: dict[str, Any], identifier: str) -> Any:
    if identifier in items:
        return items[identifier]
    return next((item for item in items.values() if item.name == identifier), None)


def resolve(backend: Any, application: str, profile: str) -> tuple[Any, Any]:
    """The moto application and profile named (or identified) so."""
    app = _find(backend.applications, application)
    if app is None:
        raise not_found("Application", f"Application {application!r} not found")
    config_profile = _find(app.config_profiles, profile)
    if config_profile is None:
        raise not_found(
            "ConfigurationProfile", f"Configuration profile {profile!r} not found in {app.name!r}"
        )
    return app, config_profile


def latest_version(profile: Any) -> Any:
    """The profile's deployed version: its newest hosted configuration version."""
    if not profile.config_versions:
        raise not_found(
            "Configuration", f"Configuration profile {profile.name!r} has no deployed version"
        )
    return profile.config_versions[max(profile.config_versions)]


# -- the two operations -------------------------------------------------------------------


def _poll_interval(raw: Any) -> tuple[int, bool]:
    if raw is None:
        return DEFAULT_POLL_INTERVAL_S, False
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise bad_request("RequiredMinimumPollIntervalInSeconds must be an integer")
    if not MIN_POLL_INTERVAL_S <= raw <= MAX_POLL_INTERVAL_S:
        raise bad_request(
            f"RequiredMinimumPollIntervalInSeconds must be within "
            f"{MIN_POLL_INTERVAL_S}..{MAX_POLL_INTERVAL_S}"
        )
    return raw, True


def start_session(account: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
    """``StartConfigurationSession``: the response body."""
    names = {}
    for member in (
        "ApplicationIdentifier",
        "EnvironmentIdentifier",
        "ConfigurationProfileIdentifier",
    ):
        value = params.get(member)
        if not isinstance(value, str) or not value:
            raise bad_request(f"{member} is required")
        names[member] = value
    interval, required = _poll_interval(params.get("RequiredMinimumPollIntervalInSeconds"))
    app, profile = resolve(
        _backend(account, region),
        names["ApplicationIdentifier"],
        names["ConfigurationProfileIdentifier"],
    )
    session = Session(
        account=account,
        region=region,
        application_id=app.id,
        profile_id=profile.id,
        environment=names["EnvironmentIdentifier"],
        interval_s=interval,
        required=required,
    )
    return {"InitialConfigurationToken": SESSIONS.issue(session)}


def latest_configuration(token: str) -> tuple[dict[str, str], bytes]:
    """``GetLatestConfiguration``: the response headers and body (empty: unchanged)."""
    if not token:
        raise bad_request("ConfigurationToken is required")
    session = SESSIONS.redeem(token)
    now = SESSIONS.clock()
    early = session.last_poll is not None and now - session.last_poll < session.interval_s
    if session.required and early:
        raise bad_request(
            f"Request too early: this session polls at most every {session.interval_s} s"
        )
    session.last_poll = now
    backend = _backend(session.account, session.region)
    _, profile = resolve(backend, session.application_id, session.profile_id)
    version = latest_version(profile)
    headers = {
        "Next-Poll-Configuration-Token": SESSIONS.issue(session),
        "Next-Poll-Interval-In-Seconds": str(session.interval_s),
    }
    if session.last_version == version.version:
        headers["Content-Type"] = version.content_type or "application/octet-stream"
        return headers, b""
    session.last_version = version.version
    content = version.content
    body = content.encode("utf-8") if isinstance(content, str) else bytes(content or b"")
    headers["Content-Type"] = version.content_type or "application/octet-stream"
    if version.version_label:
        headers["Version-Label"] = version.version_label
    return headers, body


# -- moto's side: routes and request handling ---------------------------------------------


def _caller(request: Any, full_url: str, headers: Any) -> tuple[str, str]:
    """(account, region) of the request, as moto's own AppConfig responses see them."""
    from moto.core.responses import BaseResponse

    response = BaseResponse(service_name="appconfig")
    response.setup_class(request, full_url, headers)
    return str(response.current_account), str(response.region)


def _sessions_handler(request: Any, full_url: str, headers: Any) -> tuple[int, dict[str, str], Any]:
    try:
        if request.method != "POST":
            raise bad_request(f"{request.method} is not supported on /configurationsessions")
        account, region = _caller(request, full_url, headers)
        try:
            params = json.loads(request.data or b"{}")
        except ValueError:
            raise bad_request("The request body is not JSON") from None
        if not isinstance(params, dict):
            raise bad_request("The request body must be a JSON object")
        body = start_session(account, region, params)
    except DataError as error:
        return error.response()
    return 201, {"Content-Type": "application/json"}, json.dumps(body)


def _configuration_handler(
    request: Any, full_url: str, headers: Any
) -> tuple[int, dict[str, str], Any]:
    try:
        if request.method != "GET":
            raise bad_request(f"{request.method} is not supported on /configuration")
        query = parse_qs(urlparse(full_url).query)
        token = (query.get("configuration_token") or [""])[0]
        out_headers, body = latest_configuration(token)
    except DataError as error:
        return error.response()
    return 200, out_headers, body


def install() -> None:
    """Add the AppConfigData routes to moto's AppConfig URL map, process-wide."""
    from moto.appconfig import urls

    if _PATCHED:
        return
    urls.url_paths[SESSIONS_PATH] = _sessions_handler
    urls.url_paths[CONFIGURATION_PATH] = _configuration_handler
    _PATCHED.extend((SESSIONS_PATH, CONFIGURATION_PATH))


def uninstall() -> None:
    """Remove the routes again (a server that already built its routes keeps them)."""
    from moto.appconfig import urls

    while _PATCHED:
        urls.url_paths.pop(_PATCHED.pop(), None)
