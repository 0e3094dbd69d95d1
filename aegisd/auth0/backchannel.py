"""CIBA on the wire: ``/bc-authorize`` and the trio driver of the sans-IO poll machine.

Owns: building the start request (``reference/auth0-protocol.md`` §1: form-encoded,
``login_hint`` as the iss_sub JSON string, ``scope`` with ``openid`` and optionally
``offline_access``, ``audience`` when configured, ``binding_message``, ``requested_expiry``,
optional RAR ``authorization_details``), reading its answer, and running ``ciba.CibaMachine``
with ``trio.sleep_until`` and one poll at a time until it delivers tokens or fails; then the
ID token is verified before an ``Approval`` exists.

It must not decide protocol timing itself (the machine does), retry ``/bc-authorize`` except
after a connect failure (a retry after anything else could push twice), send a poll after
cancellation or after the local deadline, or show foreign text, tokens or the
``auth_req_id`` in messages (only its fingerprint, in logs).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final, final

import trio

from aegisd.auth0 import ciba
from aegisd.auth0.http import Auth0Http, Auth0Unreachable, ClientIdentity, DiscoveryError, Reply
from aegisd.auth0.idtoken import IdTokenVerifier
from aegisd.auth0.tokens import Approval, CibaStart
from aegisd.binding import is_valid_binding_message
from aegisd.config import Auth0Config
from aegisd.errors import (
    AegisError,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalUnavailable,
    Cancelled,
    RateLimited,
    SecretsUnavailable,
    UpstreamError,
)

__all__ = ["CIBA_GRANT", "Backchannel"]

log = logging.getLogger(__name__)

CIBA_GRANT: Final = "urn:openid:params:grant-type:ciba"
_MAX_AUTH_REQ_ID: Final = 2048

# What Auth0's /bc-authorize refusals most likely mean (reference §1; both Auth0 AI SDKs read
# any invalid_request as "no push enrolment", which is one of several causes).
_START_HINTS: Final = {
    "invalid_request": (
        "check that the approver is enrolled in Guardian push, CIBA is enabled for the "
        "application, and the binding message and authorization_details are valid"
    ),
    "unknown_user_id": "auth0.user_id is malformed or unknown to the tenant",
    "invalid_client": "client authentication failed (check auth0.client_id and its secret)",
    "unauthorized_client": "the application may not use CIBA (enable the CIBA grant type)",
    "invalid_scope": "the tenant refused the requested scopes",
    "access_denied": "the tenant refused the request",
    "invalid_binding_message": "the binding message was refused",
    "invalid_authorization_details": "authorization_details were refused (type registered?)",
}


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _token_response(body: dict[str, object]) -> ciba.TokenResponse | None:
    """The approved-poll body, or ``None`` when a required field is missing or mistyped."""
    access_token, id_token = body.get("access_token"), body.get("id_token")
    expires_in = _number(body.get("expires_in"))
    if not isinstance(access_token, str) or not access_token:
        return None
    if not isinstance(id_token, str) or not id_token:
        id_token = None  # allowed only for a RAR request (checked by the caller)
    if expires_in is None or expires_in <= 0:
        return None
    token_type, scope = body.get("token_type"), body.get("scope")
    refresh_token = body.get("refresh_token")
    details = body.get("authorization_details")
    return ciba.TokenResponse(
        access_token=access_token,
        id_token=id_token,
        expires_in=expires_in,
        token_type=token_type if isinstance(token_type, str) and token_type else "Bearer",
        scope=scope if isinstance(scope, str) else "",
        refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else None,
        authorization_details=(
            [d for d in details if isinstance(d, dict)] if isinstance(details, list) else None
        ),
    )


@final
class Backchannel:
    """Starts CIBA requests and waits for their answers.

    Args:
        cfg: the ``[auth0]`` section.
        http: the Auth0 seam.
        identity: the application client.
        verifier: checks the ID token of an approval.
        now: wall clock (UNIX seconds) for ``expires_at`` stamps.
    """

    def __init__(
        self,
        cfg: Auth0Config,
        http: Auth0Http,
        identity: ClientIdentity,
        verifier: IdTokenVerifier,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._cfg = cfg
        self._http = http
        self._identity = identity
        self._verifier = verifier
        self._now = now
        self.started = 0
        self.waiting = 0
        self.polls = 0
        self.approved = 0

    # ---- start ----------------------------------------------------------------------------

    def _scope(self, offline_access: bool, scopes: Sequence[str]) -> str:
        """``openid`` first (Auth0 refuses a CIBA request without it), then ``[auth0] scopes``
        and the action's, then ``offline_access`` when a refresh token is wanted."""
        wanted = ["openid", *self._cfg.scopes, *scopes]
        if offline_access:
            wanted.append("offline_access")
        return " ".join(dict.fromkeys(wanted))

    def _start_form(
        self,
        binding_message: str,
        authorization_details: list[dict[str, object]] | None,
        offline_access: bool,
        scopes: Sequence[str] = (),
    ) -> dict[str, str]:
        form = {
            # json.dumps escapes what an f-string would not (reference §8 notes the SDK's bug)
            "login_hint": json.dumps(
                {"format": "iss_sub", "iss": self._http.issuer, "sub": self._cfg.user_id},
                separators=(",", ":"),
            ),
            "scope": self._scope(offline_access, scopes),
            "binding_message": binding_message,
            "requested_expiry": str(self._cfg.requested_expiry),
        }
        if self._cfg.audience:
            form["audience"] = self._cfg.audience
        if authorization_details and self._cfg.authorization_details:
            form["authorization_details"] = json.dumps(authorization_details, separators=(",", ":"))
        return form

    async def start(
        self,
        *,
        binding_message: str,
        authorization_details: list[dict[str, object]] | None = None,
        offline_access: bool = False,
        scopes: Sequence[str] = (),
    ) -> CibaStart:
        """Send one ``/bc-authorize`` (the push to the approver's phone).

        Raises:
            ApprovalUnavailable: bad binding message, Auth0 unreachable or misconfigured,
                a missing secret, or Auth0 refused the request (message says what to check).
            RateLimited: Auth0 answered 429; ``retry_after`` says when to try again.
            UpstreamError: Auth0's answer was unusable.
        """
        if not is_valid_binding_message(binding_message):
            raise ApprovalUnavailable(
                "the binding message does not fit Auth0's limits (at most 64 letters, digits, "
                "spaces and +-_.,:#)"
            )
        try:
            endpoints = await self._http.endpoints()
        except (Auth0Unreachable, DiscoveryError) as exc:
            raise ApprovalUnavailable(exc.message) from None
        form = self._start_form(binding_message, authorization_details, offline_access, scopes)
        # Taken before sending, so our deadline is never later than Auth0's (ciba.Started).
        started_at = trio.current_time()
        started_wall = self._now()
        try:
            reply = await self._http.send(
                "POST",
                endpoints.bc_authorize,
                what="CIBA start",
                retry="connect_only",  # never a duplicate push
                on_429="raise",
                form=form,
                identity=self._identity,
            )
        except Auth0Unreachable as exc:
            hint = (
                "; if a push arrives on the phone anyway, it can be ignored"
                if exc.maybe_sent
                else ""
            )
            raise ApprovalUnavailable(exc.message + hint) from None
        except SecretsUnavailable as exc:
            raise ApprovalUnavailable(exc.message) from None
        if reply.status == 200:
            sent = authorization_details if "authorization_details" in form else None
            return self._parse_start(reply, started_at, started_wall, sent)
        if 400 <= reply.status < 500:
            raise ApprovalUnavailable(self._start_refusal(reply))
        raise UpstreamError(f"CIBA start: Auth0 answered HTTP {reply.status}")

    def _start_refusal(self, reply: Reply) -> str:
        error = reply.error
        if error == "invalid_client":
            self._http.forget_secrets()
        hint = _START_HINTS.get(error or "", "")
        message = f"Auth0 refused the approval request (HTTP {reply.status}"
        message += f", {error})" if error else ")"
        message = message + (f": {hint}" if hint else "")
        self._http.note_error(message)
        return message

    def _parse_start(
        self,
        reply: Reply,
        started_at: float,
        started_wall: float,
        details: list[dict[str, object]] | None,
    ) -> CibaStart:
        auth_req_id = reply.body.get("auth_req_id")
        expires_in = _number(reply.body.get("expires_in"))
        interval = _number(reply.body.get("interval"))
        # auth_req_id is opaque (a 64-char string at Auth0, "eyJ..." in doc samples): never
        # parsed, only checked to be a sane string.
        if not isinstance(auth_req_id, str) or not 0 < len(auth_req_id) <= _MAX_AUTH_REQ_ID:
            raise UpstreamError("CIBA start: Auth0's answer lacks auth_req_id")
        if expires_in is None or expires_in <= 0:
            raise UpstreamError("CIBA start: Auth0's answer lacks a valid expires_in")
        effective_interval = (
            interval if interval is not None and interval > 0 else ciba.DEFAULT_INTERVAL
        )
        self.started += 1
        start = CibaStart(
            auth_req_id=auth_req_id,
            expires_in=expires_in,
            interval=effective_interval,
            expires_at=started_wall + expires_in,
            started_at=started_at,
            authorization_details=details,
        )
        log.info(
            "CIBA request %s started (expires in %.0f s, interval %.0f s)",
            start.request_fingerprint,
            expires_in,
            effective_interval,
        )
        return start

    # ---- wait -----------------------------------------------------------------------------

    async def wait(
        self, start: CibaStart, *, on_poll: Callable[[], None] | None = None
    ) -> Approval:
        """Poll until the approver answers, the request expires, or the caller cancels.

        Trio cancellation stops at once: no further request is sent, and the machine
        records the withdrawal.

        Raises:
            ApprovalDenied: the approver said no.
            ApprovalExpired: nobody answered in time.
            ApprovalUnavailable: Auth0 ended the request for another reason.
            UpstreamError: an unusable answer, or an ID token that failed verification.
        """
        machine = ciba.CibaMachine()
        reason: list[str] = []  # the text for a Fail, set by _poll when it knows better
        self.waiting += 1
        try:
            queue: deque[ciba.Action] = deque(
                machine.handle(
                    ciba.Started(
                        auth_req_id=start.auth_req_id,
                        expires_in=start.expires_in,
                        interval=start.interval,
                        now=start.started_at,
                    )
                )
            )
            while queue:
                action = queue.popleft()
                match action:
                    case ciba.PollAt(when=when):
                        await trio.sleep_until(when)
                        queue.extend(machine.handle(ciba.Tick(trio.current_time())))
                    case ciba.SendPoll():
                        if on_poll is not None:
                            on_poll()
                        self.polls += 1
                        assert machine.deadline is not None
                        event = await self._poll(start, machine.deadline, reason)
                        queue.extend(machine.handle(event))
                    case ciba.Deliver(tokens=tokens):
                        return await self._approval(tokens, start)
                    case ciba.Withdraw():
                        log.info("CIBA request %s withdrawn", start.request_fingerprint)
                    case ciba.Fail(code=code):
                        raise _failure(code, reason[-1] if reason else None)
            raise AssertionError("the CIBA machine stopped without an outcome")
        except BaseException as exc:
            # httpx may deliver a cancellation inside an exception group: treat it the same
            if isinstance(exc, trio.Cancelled) or (
                isinstance(exc, BaseExceptionGroup) and exc.split(trio.Cancelled)[0] is not None
            ):
                # Withdraw: nothing is sent (Auth0 has no CIBA cancel); the push expires alone.
                machine.handle(ciba.Cancel())
                log.info("CIBA request %s withdrawn by its caller", start.request_fingerprint)
            raise
        finally:
            self.waiting -= 1

    async def _poll(self, start: CibaStart, deadline: float, reason: list[str]) -> ciba.Event:
        """Send one poll and classify the answer by its ``error`` field (reference §2)."""
        reply: Reply | None = None
        with trio.move_on_at(deadline):
            try:
                endpoints = await self._http.endpoints()  # cached: start() discovered them
                reply = await self._http.send(
                    "POST",
                    endpoints.token,
                    what="CIBA poll",
                    # the machine retries at the next interval: an immediate retry would poll
                    # faster than allowed and earn a slow_down
                    retry="none",
                    on_429="return",
                    form={"grant_type": CIBA_GRANT, "auth_req_id": start.auth_req_id},
                    identity=self._identity,
                )
            except Auth0Unreachable as exc:
                log.warning("%s; polling again at the next interval", exc.message)
                return ciba.Unreachable(trio.current_time())
            except (SecretsUnavailable, RateLimited) as exc:
                reason.append(exc.message)
                return ciba.OtherTerminal(trio.current_time(), exc.code)
            except UpstreamError as exc:
                reason.append(exc.message)
                return ciba.Malformed(trio.current_time())
        now = trio.current_time()
        if reply is None:
            return ciba.Tick(now)  # the deadline cut the poll short: the machine expires it
        if reply.status == 200:
            tokens = _token_response(reply.body)
            if tokens is None or (tokens.id_token is None and not start.authorization_details):
                # scope always holds openid, so only a RAR approval may come without one
                reason.append("CIBA poll: Auth0's approval lacks access_token/id_token/expires_in")
                return ciba.Malformed(now)
            return ciba.Approved(now, tokens)
        error = reply.error
        match error:
            case "authorization_pending":
                return ciba.Pending(now)
            case "slow_down":
                return ciba.SlowDown(now, reply.retry_after, _number(reply.body.get("interval")))
            case "access_denied":
                return ciba.Denied(now)
            case "expired_token":
                return ciba.ExpiredToken(now)
            case "invalid_grant":
                reason.append("Auth0 no longer accepts this approval request (invalid_grant)")
                return ciba.InvalidGrant(now)
        if reply.status == 429:  # too_many_requests, or no body: back off like slow_down
            return ciba.SlowDown(now, reply.retry_after, None)
        if error is not None:
            if error == "invalid_client":
                self._http.forget_secrets()
            hint = _START_HINTS.get(error, "")
            reason.append(
                f"Auth0 ended the approval request ({error})" + (f": {hint}" if hint else "")
            )
            return ciba.OtherTerminal(now, error)
        reason.append(f"CIBA poll: Auth0 answered HTTP {reply.status} without an error code")
        return ciba.Malformed(now)

    async def _approval(self, tokens: ciba.TokenResponse, start: CibaStart) -> Approval:
        claims: dict[str, object] = {}
        if tokens.id_token is not None:
            claims = await self._verifier.verify(tokens.id_token)
            sub = claims.get("sub")
            assert isinstance(sub, str)  # the verifier compared it with auth0.user_id
        else:
            # Auth0's RAR token-response sample has no id_token (reference §11). The push went
            # to auth0.user_id (login_hint) and the answer came to our authenticated poll, so
            # that is the approver; the audit says the ID token was absent.
            sub = self._cfg.user_id
            log.info("CIBA request %s: RAR approval without an ID token", start.request_fingerprint)
        self.approved += 1
        latency = trio.current_time() - start.started_at
        log.info("CIBA request %s approved after %.1f s", start.request_fingerprint, latency)
        return Approval(
            access_token=tokens.access_token,
            id_token_claims=claims,
            refresh_token=tokens.refresh_token,
            expires_at=self._now() + tokens.expires_in,
            scope=tokens.scope,
            sub=sub,
            latency=latency,
            authorization_details=tokens.authorization_details,
            id_token_verified=tokens.id_token is not None,
        )

    def state(self) -> dict[str, object]:
        return {
            "ciba_started": self.started,
            "ciba_waiting": self.waiting,
            "ciba_polls": self.polls,
            "ciba_approved": self.approved,
        }


def _failure(code: ciba.FailCode, reason: str | None) -> AegisError:
    match code:
        case "approval_denied":
            return ApprovalDenied()
        case "approval_expired":
            return ApprovalExpired()
        case "approval_unavailable":
            return ApprovalUnavailable(reason)
        case "upstream_error":
            return UpstreamError(reason or "CIBA poll: Auth0's answer is unusable")
        case "cancelled":
            return Cancelled()
