"""The socket protocol: every message as a msgspec Struct, and the frame codec.

This module is the single source of truth for the wire (DESIGN §2). The daemon, the SDK, the
shim and aegisctl import these classes; nothing builds message dicts by hand. Frames are a
4-byte big-endian length and a msgpack body of at most 64 KiB. ``FrameReader`` is sans-IO: it
is fed bytes and hands back bodies; it never touches a socket. This module must import only
msgspec and ``aegisd.errors`` so that ``import aegisd.client`` stays light.

Schema evolution follows msgspec's rules: new fields get defaults, existing fields are never
retyped, tags never change.
"""

from __future__ import annotations

import struct
from typing import Final

import msgspec

from aegisd.errors import BadRequest, FrameTooLarge

__all__ = [
    "MAX_FRAME",
    "PROTOCOL",
    "ActionInfo",
    "Actions",
    "Authorize",
    "Cancel",
    "CancelPending",
    "ClientMessage",
    "DaemonMessage",
    "Error",
    "FrameReader",
    "Grant",
    "Granted",
    "Hello",
    "ListActions",
    "ListPending",
    "Lock",
    "Locked",
    "PeerInfo",
    "Pending",
    "PendingInfo",
    "PendingList",
    "PolicyChanged",
    "PolicyResult",
    "PolicyText",
    "ProposePolicy",
    "Proxy",
    "ProxyResponse",
    "Reload",
    "Reloaded",
    "ShowPolicy",
    "Status",
    "StatusReport",
    "Watch",
    "Welcome",
    "decode_client",
    "decode_daemon",
    "encode",
]

PROTOCOL: Final = "1.0"
MAX_FRAME: Final = 64 * 1024
_HEADER: Final = struct.Struct(">I")


class _Msg(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every message: frozen, keyword-only, tagged by class name."""


# ---- client -> daemon -------------------------------------------------------------------


class Hello(_Msg, tag="hello", frozen=True, kw_only=True):
    protocol: str = PROTOCOL
    client: str = ""


class Authorize(_Msg, tag="authorize", frozen=True, kw_only=True):
    """Ask for a credential.

    ``claim`` is an unguessable handle (16 to 64 random bytes) that the caller keeps in memory:
    it makes the approval this request starts the caller's own, so that a later identical
    request with the same claim can re-attach to it. ``max_wait`` (seconds, needs a claim):
    when the approval is still pending then, the daemon answers ``Error{approval_pending}``
    and keeps the approval until it expires instead of withdrawing it.
    """

    id: int
    action: str
    params: dict[str, str] = {}
    claim: bytes | None = None
    max_wait: float | None = None


class Proxy(_Msg, tag="proxy", frozen=True, kw_only=True):
    """Have the daemon make the action's one HTTP request; ``claim``/``max_wait`` as in
    ``Authorize``."""

    id: int
    action: str
    params: dict[str, str] = {}
    body: bytes | None = None
    claim: bytes | None = None
    max_wait: float | None = None


class Cancel(_Msg, tag="cancel", frozen=True, kw_only=True):
    """Withdraw this connection's own request ``id``."""

    id: int


class ListActions(_Msg, tag="list_actions", frozen=True, kw_only=True):
    id: int


class Status(_Msg, tag="status", frozen=True, kw_only=True):
    id: int


class Watch(_Msg, tag="watch", frozen=True, kw_only=True):
    """Follow the policy: answered by a ``PolicyChanged`` now and after every reload, until
    ``Cancel{id}`` or the connection ends (no idle timeout while it runs)."""

    id: int


class ListPending(_Msg, tag="list_pending", frozen=True, kw_only=True):
    """Pending approvals: every caller's for an operator, else the asking process's own
    (``PendingList.scope`` says which; aegisd/daemon/inspection.py)."""

    id: int


class CancelPending(_Msg, tag="cancel_pending", frozen=True, kw_only=True):
    """Withdraw a pending approval by its ``PendingInfo.pending_id``: an operator any caller's,
    a matched caller only its own (else ``not_found``), an unmatched peer none
    (``peer_rejected``)."""

    id: int
    pending_id: str


class Lock(_Msg, tag="lock", frozen=True, kw_only=True):
    """Cancel every pending approval and forget every remembered one (open to every peer:
    it only makes things stricter)."""

    id: int


class Reload(_Msg, tag="reload", frozen=True, kw_only=True):
    """Operator (the daemon's own uid or root): re-read the config, like SIGHUP."""

    id: int


class ShowPolicy(_Msg, tag="show_policy", frozen=True, kw_only=True):
    """The active policy as TOML that ``ProposePolicy`` accepts as is."""

    id: int


class ProposePolicy(_Msg, tag="propose_policy", frozen=True, kw_only=True):
    """A new policy (only ``[[callers]]`` and ``[actions]``), applied after phone approval.

    Answered like ``Authorize``: ``Pending`` while the push is out, then ``PolicyResult`` or
    ``Error`` (``approval_denied``, ``approval_expired``…).
    """

    id: int
    text: str


ClientMessage = (
    Hello
    | Authorize
    | Proxy
    | Cancel
    | ListActions
    | Status
    | ListPending
    | CancelPending
    | Lock
    | Watch
    | Reload
    | ShowPolicy
    | ProposePolicy
)


# ---- daemon -> client -------------------------------------------------------------------


class PeerInfo(msgspec.Struct, frozen=True, kw_only=True):
    uid: int
    pid: int
    exe: str = ""
    caller: str | None = None
    # False when the daemon could not read /proc/<pid>/exe (another uid, no CAP_SYS_PTRACE):
    # ``exe`` is then empty and exe/sha256 caller rules do not match
    exe_verified: bool = True


class Welcome(_Msg, tag="welcome", frozen=True, kw_only=True):
    protocol: str
    daemon_version: str
    peer: PeerInfo
    policy_generation: int = 0


class Pending(_Msg, tag="pending", frozen=True, kw_only=True):
    id: int
    binding_message: str
    expires_at: float
    digest: str


class Grant(msgspec.Struct, frozen=True, kw_only=True, weakref=True):
    """A credential as delivered (the SDK's ``Credentials``); weak-referenceable so a caller
    can verify nothing keeps it after use."""

    access_token: str
    token_type: str = "Bearer"
    expires_at: float | None = None
    scope: str = ""
    kind: str = ""
    connection: str | None = None

    def __repr__(self) -> str:  # never print a token by accident
        return f"Grant(token_type={self.token_type!r}, kind={self.kind!r}, access_token=<hidden>)"


class Granted(_Msg, tag="granted", frozen=True, kw_only=True):
    id: int
    grant: Grant


class ProxyResponse(_Msg, tag="proxy_response", frozen=True, kw_only=True):
    id: int
    status: int
    headers: dict[str, str] = {}
    body: bytes = b""


class Error(_Msg, tag="error", frozen=True, kw_only=True):
    code: str
    message: str
    id: int | None = None
    retry_after: float | None = None
    expires_at: float | None = None  # approval_pending: until when the approval is kept


class ActionInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str = ""
    approval: str = "ciba"
    delivery: str = "proxy"
    params_schema: dict[str, object] = {}
    body: bool = False
    method: str = ""  # the proxy request's HTTP method ("" for token delivery)
    title: str = ""
    # the policy's own hints (read_only, destructive, idempotent, open_world); the shim
    # derives the rest from method and approval
    annotations: dict[str, bool] = {}


class PolicyChanged(_Msg, tag="policy_changed", frozen=True, kw_only=True):
    """Answer to ``Watch``: the policy now in force is number ``generation`` (0 at start)."""

    id: int
    generation: int


class Actions(_Msg, tag="actions", frozen=True, kw_only=True):
    id: int
    actions: list[ActionInfo]


class PendingInfo(msgspec.Struct, frozen=True, kw_only=True):
    pending_id: str
    action: str
    caller: str
    binding_message: str
    digest: str
    started_at: float
    expires_at: float
    waiters: int = 1
    params: dict[str, str] = {}  # the full parameters, to check against the phone's text
    state: str = "pending"  # then the answer held for its requester: approved or an error code


class PendingList(_Msg, tag="pending_list", frozen=True, kw_only=True):
    id: int
    pending: list[PendingInfo]
    # whose approvals ``pending`` holds: "all" (an operator; also what daemons before this
    # field always sent), "own" (the asking process's), "none" (no caller rule matches it)
    scope: str = "all"
    note: str = ""  # for people: why the list is limited and how to see everything


class Locked(_Msg, tag="locked", frozen=True, kw_only=True):
    id: int
    cancelled: int
    forgotten: int


class StatusReport(_Msg, tag="status_report", frozen=True, kw_only=True):
    id: int
    daemon_version: str
    pid: int
    uptime: float
    socket: str
    config: str
    peers: list[PeerInfo] = []
    pending: int = 0
    audit_log: str = ""
    audit_ok: bool = True
    audit_detail: str = ""
    auth0: dict[str, str] = {}
    actions: int = 0
    callers: int = 0
    # "separated" (aegisd runs as its own account) or "same-uid" (as the person); "" = old daemon
    mode: str = ""
    daemon_uid: int = -1
    daemon_user: str = ""
    hardening: str = ""  # e.g. "not dumpable (PR_SET_DUMPABLE 0)"
    policy_sha256: str = ""  # of the active policy's canonical text (``policy show``)
    policy_source: str = ""  # "config" or the policy_file path
    policy_generation: int = 0  # 0 at start, bumped by every reload and applied proposal
    # the same Auth0 state as ``auth0`` with each value's own type ("jwks_keys": 0, not "0")
    auth0_state: dict[str, str | int | float | bool | None] = {}
    # secrets the config needs that the backend lacked when the daemon started (names only)
    missing_secrets: list[str] = []
    # the writer's tip, kept in the daemon's memory (the agent cannot rewrite it): a log
    # whose chain ends before it was truncated (``audit verify`` compares)
    audit_tip_seq: int = 0
    audit_tip_hash: str = ""
    audit_pruned: int = 0  # records deleted by rotation (``[audit] keep_files``), per the chain
    audit_verifying: bool = False  # the incremental check has not caught up yet
    audit_bytes_per_hour: float = 0.0  # growth since the daemon started
    audit_suppressed: int = 0  # refusals counted, not recorded one by one, since start
    audit_warnings: list[str] = []  # pruned, growing fast, refusals suppressed


class Reloaded(_Msg, tag="reloaded", frozen=True, kw_only=True):
    id: int
    ok: bool
    generation: int
    problems: list[str] = []
    policy_sha256: str = ""


class PolicyText(_Msg, tag="policy_text", frozen=True, kw_only=True):
    id: int
    text: str
    sha256: str
    source: str = ""


class PolicyResult(_Msg, tag="policy_result", frozen=True, kw_only=True):
    """The end of a proposal: applied, unchanged (nothing to approve) or invalid."""

    id: int
    applied: bool
    sha256: str = ""
    summary: str = ""
    changes: list[str] = []
    problems: list[str] = []
    generation: int = 0


DaemonMessage = (
    Welcome
    | Pending
    | Granted
    | ProxyResponse
    | Error
    | Actions
    | PendingList
    | Locked
    | StatusReport
    | PolicyChanged
    | Reloaded
    | PolicyText
    | PolicyResult
)

_ENCODER: Final = msgspec.msgpack.Encoder()
_CLIENT_DECODER: Final = msgspec.msgpack.Decoder(ClientMessage)
_DAEMON_DECODER: Final = msgspec.msgpack.Decoder(DaemonMessage)


def encode(msg: ClientMessage | DaemonMessage) -> bytes:
    """One message as a complete frame (header + body)."""
    body = _ENCODER.encode(msg)
    if len(body) > MAX_FRAME:
        raise FrameTooLarge(f"message of {len(body)} bytes exceeds the 64 KiB frame limit")
    return _HEADER.pack(len(body)) + body


def decode_client(body: bytes) -> ClientMessage:
    """Decode a frame body sent by a client; ``BadRequest`` on anything malformed."""
    try:
        msg: ClientMessage = _CLIENT_DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed message: {_short(exc)}") from None
    except UnicodeDecodeError:
        # msgspec raises this, not DecodeError, for invalid UTF-8 inside a msgpack string
        # (found by tests/proof/fuzzer.py): bad bytes must end in a typed error
        raise BadRequest("malformed message: a string is not valid UTF-8") from None
    return msg


def decode_daemon(body: bytes) -> DaemonMessage:
    """Decode a frame body sent by the daemon; ``BadRequest`` on anything malformed."""
    try:
        reply: DaemonMessage = _DAEMON_DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed message from daemon: {_short(exc)}") from None
    except UnicodeDecodeError:
        raise BadRequest("malformed message from daemon: a string is not valid UTF-8") from None
    return reply


def _short(exc: Exception) -> str:
    # msgspec's messages name the field and expected type, never echo the value.
    return str(exc)[:200]


class FrameReader:
    """Sans-IO frame splitter: ``feed(data)`` then iterate ``frames()``.

    Raises ``FrameTooLarge`` as soon as a header announces more than ``MAX_FRAME`` bytes, so a
    peer cannot make the daemon buffer a huge body.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_frame(self) -> bytes | None:
        """The next complete body, or None if more bytes are needed."""
        if len(self._buf) < _HEADER.size:
            return None
        (length,) = _HEADER.unpack_from(self._buf)
        if length > self._max:
            raise FrameTooLarge(f"frame of {length} bytes exceeds the 64 KiB limit")
        end = _HEADER.size + length
        if len(self._buf) < end:
            return None
        body = bytes(self._buf[_HEADER.size : end])
        del self._buf[:end]
        return body
