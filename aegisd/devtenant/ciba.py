"""The tenant's CIBA request book: starting, polling, approving, denying, expiring.

Owns the validation of ``/bc-authorize`` parameters (``reference/auth0-protocol.md`` §1: openid
scope, ``login_hint`` in the iss_sub format, binding message of at most 64 characters from
Auth0's set, ``requested_expiry`` 1..300, RAR ``authorization_details`` with a registered type,
an audience, and the one-object shape Guardian renders (§11), the per-user cap of
five starts a minute) and the polling rules of §2 (``authorization_pending``, ``slow_down``
with a growing interval, ``access_denied`` for denial and for expiry, ``invalid_grant`` for
unknown or used ids). Pure: monotonic and wall-clock times are arguments; no I/O, no tokens
(``tokens.py`` mints them once a poll succeeds).
"""

from __future__ import annotations

import enum
import json
import math
import re
import secrets
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, final

import msgspec

__all__ = ["CibaBook", "CibaError", "CibaRequest", "CibaStatus", "PendingRequest", "pending_view"]

_BINDING_RE: Final = re.compile(r"[A-Za-z0-9 +\-_.,:#]{1,64}")
_RETENTION: Final = 600.0  # answer access_denied for this long after expiry, then forget
_DENIED_OR_EXPIRED: Final = "The end-user denied the authorization request or it has been expired"


class CibaStatus(enum.Enum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    ISSUED = "issued"


class CibaError(Exception):
    """An OAuth error answer for ``/bc-authorize`` or a CIBA poll."""

    def __init__(
        self,
        error: str,
        description: str,
        status: int = 400,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def _invalid_request(description: str) -> CibaError:
    return CibaError("invalid_request", description)


@dataclass
class CibaRequest:
    auth_req_id: str
    client_id: str
    user_id: str
    scope: list[str]
    audience: str | None
    binding_message: str
    authorization_details: list[dict[str, Any]] | None
    created_mono: float
    expires_mono: float
    created_wall: float
    expires_wall: float
    interval: float  # grows by 5 s with each slow_down (CIBA Core)
    status: CibaStatus = CibaStatus.PENDING
    last_poll: float | None = None
    auth_time: float | None = None  # wall clock of the approval
    polls: int = 0

    def expired(self, mono: float) -> bool:
        return mono >= self.expires_mono


_RAR_NAME: Final = re.compile(r"[a-zA-Z0-9_.-]{1,255}")


def _guardian_problem(details: list[Any]) -> str | None:
    """Why Guardian could not render these details, or ``None`` (reference §11: exactly one
    object with type, instruction and properties; each property display, name,
    display_order and value; at most 10; names [a-zA-Z0-9_.-]; values at most 255 chars)."""
    if len(details) != 1:
        return "Guardian renders exactly one authorization_details object"
    entry = details[0]
    if not isinstance(entry.get("instruction"), str):
        return "authorization_details needs an instruction string"
    props = entry.get("properties")
    if not isinstance(props, list) or not 1 <= len(props) <= 10:
        return "authorization_details needs 1 to 10 properties"
    for prop in props:
        if not isinstance(prop, dict) or set(prop) - {"description"} != {
            "display",
            "name",
            "display_order",
            "value",
        }:
            return "each property needs display, name, display_order and value"
        if not isinstance(prop["display"], bool) or not isinstance(prop["display_order"], int):
            return "property display must be a boolean and display_order an integer"
        if not isinstance(prop["name"], str) or not _RAR_NAME.fullmatch(prop["name"]):
            return "property names must be [a-zA-Z0-9_.-]"
        if not isinstance(prop["value"], str) or len(prop["value"]) > 255:
            return "property values must be strings of at most 255 characters"
    return None


def _parse_rar(raw: str, registered: frozenset[str]) -> list[dict[str, Any]]:
    if len(raw.encode()) > 5 * 1024:
        raise _invalid_request("authorization_details must be at most 5 KB")
    try:
        details = json.loads(raw)
    except ValueError:
        raise _invalid_request("authorization_details must be a JSON array") from None
    if not isinstance(details, list) or not 1 <= len(details) <= 5:
        raise _invalid_request("authorization_details must be a JSON array of 1 to 5 objects")
    for entry in details:
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise _invalid_request("each authorization_details entry needs a string type")
        if entry["type"] not in registered:
            raise _invalid_request("authorization_details type is not registered on the API")
    problem = _guardian_problem(details)
    if problem is not None:
        raise _invalid_request(problem)
    return details


def _wire_number(value: float) -> int | float:
    """Auth0 answers whole seconds; fractional intervals exist only for fast tests."""
    return int(value) if float(value).is_integer() else value


@final
class CibaBook:
    """Every CIBA request the tenant knows, by ``auth_req_id``."""

    def __init__(
        self,
        *,
        issuer: str,
        interval: float,
        default_expiry: int,
        max_requested_expiry: int,
        per_user_per_minute: int | None,
        slow_down_enforced: bool,
        slow_down_tolerance: float,
        rar_types: frozenset[str] = frozenset(),
    ) -> None:
        self._issuer = issuer
        self._rar_types = rar_types
        self._interval = interval
        self._default_expiry = default_expiry
        self._max_expiry = max_requested_expiry
        self._per_user = per_user_per_minute
        self._slow_down = slow_down_enforced
        self._tolerance = slow_down_tolerance
        self._requests: dict[str, CibaRequest] = {}
        self._starts: dict[str, deque[float]] = {}

    def __len__(self) -> int:
        return len(self._requests)

    def get(self, auth_req_id: str) -> CibaRequest | None:
        return self._requests.get(auth_req_id)

    def all_ids(self) -> list[str]:
        return list(self._requests)

    def _forget_old(self, mono: float) -> None:
        stale = [k for k, r in self._requests.items() if mono > r.expires_mono + _RETENTION]
        for key in stale:
            del self._requests[key]

    def start(
        self,
        params: Mapping[str, str],
        *,
        client_id: str,
        known_users: frozenset[str],
        audiences: frozenset[str],
        mono: float,
        wall: float,
    ) -> CibaRequest:
        """Validate a ``/bc-authorize`` body from an authenticated client; record it.

        Raises:
            CibaError: ``invalid_request`` (400), ``unknown_user_id`` (400),
                ``access_denied`` (403, unknown audience) or ``too_many_requests`` (429).
        """
        self._forget_old(mono)
        scope = params.get("scope", "").split()
        if "openid" not in scope:
            raise _invalid_request("openid scope must be requested")
        user_id = self._login_hint_sub(params.get("login_hint"))
        if user_id not in known_users:
            raise CibaError("unknown_user_id", "User ID is malformed or unknown")
        message = params.get("binding_message")
        if message is None:
            raise _invalid_request("binding_message is required")
        if not _BINDING_RE.fullmatch(message):
            raise _invalid_request(
                "binding_message must be 1 to 64 characters of A-Z a-z 0-9 space and +-_.,:#"
            )
        expires_in = self._default_expiry
        if "requested_expiry" in params:
            try:
                expires_in = int(params["requested_expiry"])
            except ValueError:
                raise _invalid_request("requested_expiry must be an integer") from None
            if not 1 <= expires_in <= self._max_expiry:
                raise _invalid_request(
                    f"requested_expiry must be between 1 and {self._max_expiry} seconds"
                )
        audience = params.get("audience") or None
        if audience is not None and audience not in audiences:
            raise CibaError("access_denied", f"Service not found: {audience}", 403)
        details = None
        if params.get("authorization_details"):
            if audience is None:
                raise _invalid_request("authorization_details need an audience (types are per API)")
            details = _parse_rar(params["authorization_details"], self._rar_types)
        self._check_user_cap(user_id, mono)
        request = CibaRequest(
            auth_req_id=secrets.token_urlsafe(48),  # 64 URL-safe characters, like Auth0's
            client_id=client_id,
            user_id=user_id,
            scope=scope,
            audience=audience,
            binding_message=message,
            authorization_details=details,
            created_mono=mono,
            expires_mono=mono + expires_in,
            created_wall=wall,
            expires_wall=wall + expires_in,
            interval=self._interval,
        )
        self._requests[request.auth_req_id] = request
        return request

    def start_answer(self, request: CibaRequest) -> dict[str, Any]:
        """The 200 body of ``/bc-authorize``."""
        return {
            "auth_req_id": request.auth_req_id,
            "expires_in": round(request.expires_mono - request.created_mono),
            "interval": _wire_number(self._interval),
        }

    def _login_hint_sub(self, raw: str | None) -> str:
        if not raw:
            raise _invalid_request("login_hint is required")
        try:
            hint = json.loads(raw)
        except ValueError:
            raise _invalid_request("login_hint must be a JSON object (iss_sub format)") from None
        if not isinstance(hint, dict) or hint.get("format") != "iss_sub":
            raise _invalid_request("login_hint format must be iss_sub")
        if hint.get("iss") != self._issuer:
            raise _invalid_request("login_hint iss must be the tenant issuer with trailing slash")
        sub = hint.get("sub")
        if not isinstance(sub, str):
            raise CibaError("unknown_user_id", "User ID is malformed or unknown")
        return sub

    def _check_user_cap(self, user_id: str, mono: float) -> None:
        if self._per_user is None:
            return
        window = self._starts.setdefault(user_id, deque())
        while window and window[0] <= mono - 60.0:
            window.popleft()
        if len(window) >= self._per_user:
            wait = max(1, math.ceil(window[0] + 60.0 - mono))
            raise CibaError(
                "too_many_requests",
                "Too many requests for this user. Try again later.",
                429,
                headers={
                    "Retry-After": str(wait),
                    "x-ratelimit-limit": str(self._per_user),
                    "x-ratelimit-remaining": "0",
                    "x-ratelimit-reset": str(wait),  # relative here; made absolute by the app
                },
            )
        window.append(mono)

    def poll(self, auth_req_id: str, *, client_id: str, mono: float) -> CibaRequest:
        """One poll from an authenticated client; returns the request only when approved.

        Raises:
            CibaError: ``authorization_pending``, ``slow_down`` (with ``Retry-After`` and the
                grown ``interval``), ``access_denied`` (denied or expired), ``invalid_grant``.
        """
        request = self._requests.get(auth_req_id)
        if request is None or request.client_id != client_id:
            raise CibaError("invalid_grant", "Invalid or expired auth_req_id")
        request.polls += 1
        if request.status is CibaStatus.ISSUED:
            raise CibaError("invalid_grant", "auth_req_id has already been used")
        last, request.last_poll = request.last_poll, mono
        if (
            self._slow_down
            and last is not None
            and mono - last < request.interval - self._tolerance
        ):
            request.interval += 5.0
            wait = _wire_number(request.interval)
            raise CibaError(
                "slow_down",
                f"You are polling faster than allowed. Try again in {wait} seconds.",
                headers={"Retry-After": str(math.ceil(request.interval))},
                extra={"interval": wait},
            )
        if request.status is CibaStatus.DENIED or request.expired(mono):
            raise CibaError("access_denied", _DENIED_OR_EXPIRED)
        if request.status is CibaStatus.PENDING:
            raise CibaError("authorization_pending", "The end-user authorization is pending")
        return request

    def mark_issued(self, request: CibaRequest) -> None:
        """The tokens went out: the id is single-use from now on."""
        request.status = CibaStatus.ISSUED

    def _answerable(self, auth_req_id: str, mono: float) -> CibaRequest:
        request = self._requests.get(auth_req_id)
        if request is None or request.status is not CibaStatus.PENDING or request.expired(mono):
            raise KeyError(auth_req_id)
        return request

    def approve(self, auth_req_id: str, *, mono: float, wall: float) -> CibaRequest:
        """The person approved. Raises ``KeyError`` unless the request is pending."""
        request = self._answerable(auth_req_id, mono)
        request.status = CibaStatus.APPROVED
        request.auth_time = wall
        return request

    def deny(self, auth_req_id: str, *, mono: float) -> CibaRequest:
        """The person denied. Raises ``KeyError`` unless the request is pending."""
        request = self._answerable(auth_req_id, mono)
        request.status = CibaStatus.DENIED
        return request

    def pending(self, mono: float) -> list[CibaRequest]:
        """Requests awaiting the person, oldest first."""
        self._forget_old(mono)
        return [
            r
            for r in self._requests.values()
            if r.status is CibaStatus.PENDING and not r.expired(mono)
        ]


class PendingRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A pending request as the phone shows it (no tokens, no client secret).

    ``id`` is the ``auth_req_id``; ``created_at``/``expires_at`` are wall-clock seconds.
    """

    id: str
    binding_message: str
    scope: list[str]
    audience: str | None
    authorization_details: list[dict[str, Any]] | None
    user_id: str
    client_id: str
    created_at: float
    expires_at: float
    seconds_left: int


def pending_view(request: CibaRequest, mono: float) -> PendingRequest:
    """The phone's view of one request."""
    return PendingRequest(
        id=request.auth_req_id,
        binding_message=request.binding_message,
        scope=list(request.scope),
        audience=request.audience,
        authorization_details=request.authorization_details,
        user_id=request.user_id,
        client_id=request.client_id,
        created_at=request.created_wall,
        expires_at=request.expires_wall,
        seconds_left=max(0, math.ceil(request.expires_mono - mono)),
    )
