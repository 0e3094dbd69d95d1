"""The AegisError tree: one class per stable wire code, each knowing its CLI exit code.

This module owns the mapping between situations, wire codes (DESIGN §2) and exit codes. It
must not import anything but the standard library: the SDK, the shim, the CLI and the daemon
all share it, and ``import aegisd.client`` has to stay light.

    AegisError                       code               exit
    ├── BadRequest                   bad_request         65   (EX_DATAERR; 2 is click's usage)
    │   ├── FrameTooLarge            frame_too_large     65
    │   └── UnsupportedProtocol      unsupported_protocol 65
    ├── PeerRejected                 peer_rejected        4
    ├── UnknownAction                unknown_action       5
    ├── CallerNotAllowed             caller_not_allowed   4
    ├── InvalidParams                invalid_params       5
    ├── PolicyDenied                 policy_denied        6
    ├── RateLimited                  rate_limited         7
    ├── ApprovalDenied               approval_denied      8
    ├── ApprovalExpired              approval_expired     9
    ├── ApprovalUnavailable          approval_unavailable 10
    ├── CredentialUnavailable        credential_unavailable 11
    ├── UpstreamError                upstream_error       12
    │   └── CredentialReflected      credential_reflected 15
    ├── Cancelled                    cancelled            13
    ├── ShuttingDown                 shutting_down        14
    ├── ApprovalPending              approval_pending     16  (the request asked for max_wait)
    ├── NotFound                     not_found            17
    ├── Internal                     internal             70
    ├── DaemonUnavailable            daemon_unavailable    3   (client side only)
    ├── DaemonUntrusted              daemon_untrusted     19   (client side only)
    ├── ConfigError                  config_invalid       78   (local only, never on the wire)
    │   ├── UnsafeFile               unsafe_file          78   (local only)
    │   └── AlreadyRunning           already_running      18   (local only)
    └── SecretsUnavailable           secrets_unavailable  79   (local only, never on the wire)

aegisctl adds 1 (a check found problems: doctor, audit verify, policy check) and click's 2
(usage error: unknown option, missing argument); docs/CLI.md has the whole table.

Messages are for people. They never carry a secret, a token or a traceback; callers that
build one from foreign text must pass only text they control.
"""

from __future__ import annotations

from typing import ClassVar, Final

__all__ = [
    "AegisError",
    "AlreadyRunning",
    "ApprovalDenied",
    "ApprovalExpired",
    "ApprovalPending",
    "ApprovalUnavailable",
    "BadRequest",
    "CallerNotAllowed",
    "Cancelled",
    "ConfigError",
    "CredentialReflected",
    "CredentialUnavailable",
    "DaemonUnavailable",
    "DaemonUntrusted",
    "FrameTooLarge",
    "Internal",
    "InvalidParams",
    "NotFound",
    "PeerRejected",
    "PolicyDenied",
    "RateLimited",
    "SecretsUnavailable",
    "ShuttingDown",
    "UnknownAction",
    "UnsafeFile",
    "UnsupportedProtocol",
    "UpstreamError",
    "error_for_code",
]


class AegisError(Exception):
    """Base of every error Aegis raises on purpose.

    Attributes:
        code: the stable machine code (DESIGN §2); also the wire ``Error.code``.
        exit_code: what ``aegisctl`` exits with when this error ends a command.
        message: a human sentence without secrets.
        retry_after: seconds after which a retry may succeed, when known.
    """

    code: ClassVar[str] = "internal"
    exit_code: ClassVar[int] = 70
    default_message: ClassVar[str] = "internal error"

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        self.message = message or self.default_message
        self.retry_after = retry_after
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class BadRequest(AegisError):
    """The peer sent something that is not a valid message in this state."""

    code = "bad_request"
    exit_code = 65  # EX_DATAERR: distinct from click's usage errors (2)
    default_message = "malformed or unexpected message"


class FrameTooLarge(BadRequest):
    """A frame announced a body larger than the 64 KiB limit."""

    code = "frame_too_large"
    default_message = "frame exceeds the 64 KiB limit"


class UnsupportedProtocol(BadRequest):
    """The peer's Hello names a major protocol version this side does not speak."""

    code = "unsupported_protocol"
    default_message = "unsupported protocol version"


class PeerRejected(AegisError):
    """The connecting process is not allowed: wrong uid, or no caller rule matches it."""

    code = "peer_rejected"
    exit_code = 4
    default_message = "this process is not allowed to use aegisd"


class UnknownAction(AegisError):
    """The requested action is not defined by the policy."""

    code = "unknown_action"
    exit_code = 5
    default_message = "no such action"


class CallerNotAllowed(AegisError):
    """The caller's rule exists but does not list the requested action."""

    code = "caller_not_allowed"
    exit_code = 4
    default_message = "this caller may not use that action"


class InvalidParams(AegisError):
    """A parameter is missing, unexpected, or does not match its pattern."""

    code = "invalid_params"
    exit_code = 5
    default_message = "parameters do not match the action's policy"


class PolicyDenied(AegisError):
    """The policy refuses the action outright (``approval = "deny"``, or a proxy rule)."""

    code = "policy_denied"
    exit_code = 6
    default_message = "the policy denies this action"


class RateLimited(AegisError):
    """A local or upstream limit was hit; ``retry_after`` says when to try again."""

    code = "rate_limited"
    exit_code = 7
    default_message = "too many requests; try again later"


class ApprovalDenied(AegisError):
    """The person denied the request on their phone."""

    code = "approval_denied"
    exit_code = 8
    default_message = "the request was denied on the phone"


class ApprovalExpired(AegisError):
    """Nobody answered the push before it expired."""

    code = "approval_expired"
    exit_code = 9
    default_message = "the approval request expired before anyone answered"


class ApprovalUnavailable(AegisError):
    """An approval could not be started: Auth0 unreachable, misconfigured, or refused it."""

    code = "approval_unavailable"
    exit_code = 10
    default_message = "an approval could not be started"


class CredentialUnavailable(AegisError):
    """Approval succeeded but no credential could be obtained (Token Vault and fallback)."""

    code = "credential_unavailable"
    exit_code = 11
    default_message = "no credential could be obtained for this action"


class UpstreamError(AegisError):
    """Auth0 or the proxied API answered with something unusable."""

    code = "upstream_error"
    exit_code = 12
    default_message = "the upstream service answered with an error"


class CredentialReflected(UpstreamError):
    """The proxied API's answer contained the credential aegisd sent it; the whole answer was
    withheld (the request itself may have had its effect)."""

    code = "credential_reflected"
    exit_code = 15
    default_message = "the API's answer contained the credential, so it was withheld"


class Cancelled(AegisError):
    """The request was withdrawn by its caller, by ``aegisctl cancel`` or by ``lock``."""

    code = "cancelled"
    exit_code = 13
    default_message = "the request was cancelled"


class ShuttingDown(AegisError):
    """The daemon is stopping; the request was not completed."""

    code = "shutting_down"
    exit_code = 14
    default_message = "aegisd is shutting down"


class ApprovalPending(AegisError):
    """The request's ``max_wait`` passed while the approval is still out on the phone.

    The daemon keeps that approval until ``expires_at`` (epoch seconds): the same request sent
    again with the same ``claim`` re-attaches to it instead of sending a second push.
    """

    code = "approval_pending"
    exit_code = 16
    default_message = "the approval is still pending: send the same request again to continue"

    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        expires_at: float | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.expires_at = expires_at


class NotFound(AegisError):
    """The thing named does not exist: a pending approval, the audit log, a pending push."""

    code = "not_found"
    exit_code = 17
    default_message = "not found"


class Internal(AegisError):
    """A bug in aegisd. The details are in the daemon's log, never in the message."""

    code = "internal"
    exit_code = 70
    default_message = "internal error in aegisd (see its log)"


class DaemonUnavailable(AegisError):
    """Client side only: nothing answers on the socket."""

    code = "daemon_unavailable"
    exit_code = 3
    default_message = "aegisd is not running (start it with `aegisd` or `aegisctl service install`)"


class DaemonUntrusted(AegisError):
    """Client side only: the socket's server is not aegisd's account, or its directory is unsafe.

    Raised after ``connect`` and before a single byte is sent (``aegisd.locate``): a socket
    planted by another user must never receive a request nor hand back a token.
    """

    code = "daemon_untrusted"
    exit_code = 19
    default_message = "the process on the socket is not a trusted aegisd"


class ConfigError(AegisError):
    """Local only: a configuration or policy file is invalid.

    Attributes:
        problems: every problem found, each naming the file and key.
    """

    code = "config_invalid"
    exit_code = 78  # EX_CONFIG

    def __init__(self, message: str | None = None, *, problems: list[str] | None = None) -> None:
        self.problems = problems or ([message] if message else [])
        super().__init__(message or "; ".join(self.problems) or "invalid configuration")


class UnsafeFile(ConfigError):
    """Local only: a file aegisd would trust (its config, its policy file) could be changed by
    another account: group- or world-writable, owned by another uid, a symlink, or inside a
    directory others can write (``aegisd.trusted_file``).

    Attributes:
        reason: what is wrong, without the fix.
        fix: a shell command (or instruction) that makes the file safe.
    """

    code = "unsafe_file"

    def __init__(self, message: str, *, fix: str) -> None:
        self.reason = message
        self.fix = fix
        super().__init__(f"{message}; fix: {fix}")


class AlreadyRunning(ConfigError):
    """Local only: another aegisd answers on the socket or holds the audit log's lock, or the
    port asked for is taken."""

    code = "already_running"
    exit_code = 18


class SecretsUnavailable(AegisError):
    """Local only: the secret store is locked, absent, insecure, or lacks a needed secret."""

    code = "secrets_unavailable"
    exit_code = 79
    default_message = "the secret store is unavailable"


_WIRE_CLASSES: Final[tuple[type[AegisError], ...]] = (
    BadRequest,
    FrameTooLarge,
    UnsupportedProtocol,
    PeerRejected,
    UnknownAction,
    CallerNotAllowed,
    InvalidParams,
    PolicyDenied,
    RateLimited,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalUnavailable,
    CredentialUnavailable,
    UpstreamError,
    CredentialReflected,
    Cancelled,
    ShuttingDown,
    ApprovalPending,
    NotFound,
    Internal,
    DaemonUnavailable,
    DaemonUntrusted,
)

_BY_CODE: Final[dict[str, type[AegisError]]] = {cls.code: cls for cls in _WIRE_CLASSES}

WIRE_CODES: Final[frozenset[str]] = frozenset(c.code for c in _WIRE_CLASSES) - {
    "daemon_unavailable",
    "daemon_untrusted",
}


def error_for_code(
    code: str,
    message: str | None = None,
    retry_after: float | None = None,
    expires_at: float | None = None,
) -> AegisError:
    """Build the exception that matches a wire ``Error``; unknown codes become ``Internal``."""
    cls = _BY_CODE.get(code, Internal)
    if cls is ApprovalPending:
        return ApprovalPending(message, retry_after=retry_after, expires_at=expires_at)
    return cls(message, retry_after=retry_after)
