"""The Daemon: builds the parts from a Config and runs them under one nursery.

Owns composition (audit, policy, broker, Auth0 client, listener), the accept loop and the
connection cap, peer identification and its audit, Status (the other inspection requests are
``inspection.py``'s), SIGHUP reload and orderly shutdown. It must not contain
protocol framing (``connection.py``), socket safety checks (``server.py``) or request
decisions (``broker.py``). No global state: tests build a fresh ``Daemon`` per test.
"""

from __future__ import annotations

import contextlib
import errno
import http.cookiejar
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import trio

from aegisd import wire
from aegisd.auth0.transport import AUTH0_MAX_IN_FLIGHT, bounded_transport
from aegisd.config import CallerRule, Config
from aegisd.daemon import instance_lock
from aegisd.daemon.approvals import Approvals
from aegisd.daemon.audit import AuditLog
from aegisd.daemon.audit_anchor import Anchor
from aegisd.daemon.audit_recorder import AuditChecker, AuditRecorder, log_tip, open_audit
from aegisd.daemon.audit_status import audit_fields
from aegisd.daemon.broker import Approver, Broker
from aegisd.daemon.conn_limits import ConnectionLimits
from aegisd.daemon.connection import Connection
from aegisd.daemon.hardening import memory_access_state
from aegisd.daemon.inspection import Inspection
from aegisd.daemon.mode import running_mode, sees_everything, user_name
from aegisd.daemon.peer import (
    ExeHasher,
    PeerIdentity,
    explain_no_match,
    match_caller,
    read_peer,
    uid_allowed,
)
from aegisd.daemon.policy_keeper import PolicyKeeper
from aegisd.daemon.proposal import ProposalDesk
from aegisd.daemon.refusal_limit import RefusalGate, RefusalLimiter
from aegisd.daemon.server import Listener, access_for, notify, open_listener
from aegisd.errors import AegisError, PeerRejected, RateLimited
from aegisd.policy import Policy
from aegisd.secrets import SecretStore, env_var_name, needed_secrets, open_secret_store
from aegisd.version import installed_version

__all__ = ["Daemon", "daemon_version"]

log = logging.getLogger(__name__)

# Connections accepted beyond ``max_connections`` while their peer is identified (admission
# then keeps them, evicts an idle unmatched one for them, or refuses them).
_ADMISSION_SLACK = 32


# a Status waits this long for the audit check to catch up, then answers "verifying"
_STATUS_VERIFY_WAIT = 1.0


def daemon_version() -> str:
    return installed_version()


class Daemon:
    """aegisd. ``await nursery.start(daemon.serve)`` returns the socket path once listening."""

    def __init__(
        self,
        config: Config,
        *,
        secrets: SecretStore | None = None,
        now: Callable[[], float] = time.time,
        auth0_http: httpx.AsyncClient | None = None,
        proxy_http: httpx.AsyncClient | None = None,
        approver: Approver | None = None,
    ) -> None:
        self.version = daemon_version()
        self.handshake_timeout = config.daemon.handshake_timeout
        self.idle_timeout = config.daemon.idle_timeout
        self.unmatched_idle_timeout = config.daemon.unmatched_idle_timeout
        self._now = now
        self._secrets = secrets
        self._auth0_http = auth0_http
        self._proxy_http = proxy_http
        self._approver = approver
        self._hasher = ExeHasher()
        self._needs_hash = any(rule.sha256 for rule in config.callers)
        self._connections: dict[int, Connection] = {}  # every one, admitted or not yet
        self.limits = ConnectionLimits(lambda: self.config.daemon)
        self._next_conn = 0
        self._started_wall = now()
        self._started = 0.0
        self.audit = AuditLog(
            config.audit_path(),
            now=now,
            rotate_bytes=config.daemon.audit_rotate_bytes,
            keep=config.audit.keep_files,
        )
        self.recorder = AuditRecorder(self.audit, Anchor(self.audit.path))
        # everything records through the gate: limited refusals over budget become summaries
        self.record = RefusalGate(
            self.recorder,
            RefusalLimiter(config.audit.refusals_per_second, config.audit.refusal_burst),
            wall=now,
            interval=config.audit.summary_interval,
        )
        self.checker = AuditChecker(self.audit)
        self._truncated: dict[str, object] | None = None
        self.keeper = PolicyKeeper(config, self.record, self._on_policy_swap)
        for warning in self.policy.warnings:
            log.warning("policy: %s", warning)
        # fixed for the process's life (aegisd.daemon.main hardens before it builds the Daemon)
        self._mode, self._user = running_mode(), user_name(os.getuid())
        self._hardening = memory_access_state()
        self.proposals = ProposalDesk(None, self.record)
        self.inspection = Inspection(record=self.record, keeper=self.keeper, mode=self._mode)
        self.listener: Listener | None = None
        self.broker: Broker  # built in serve()
        self.stopping = False
        self.missing_secrets: list[str] = []
        self._cancel: trio.CancelScope | None = None
        # set and renewed by every policy swap; Watch requests wait on it
        self._policy_event = trio.Event()

    # ---- running -------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED) -> None:
        self._started = trio.current_time()
        # The audit log's lock, then the socket: a second aegisd (even one whose socket was
        # deleted) must stop before it touches (and "repairs") the running one's log (13.10).
        lock = await instance_lock.take(self.config.audit_path(), self.config.socket_path())
        try:
            self.listener = await open_listener(
                self.config.socket_path(), access=access_for(self.config.daemon.socket_group)
            )
            self._truncated = await trio.to_thread.run_sync(open_audit, self.audit, self.recorder)
        except BaseException:
            if self.listener is not None:
                self.listener.close()
            lock.release()
            raise
        for problem in self.audit.recovered:
            log.warning("audit log: %s", problem)
        if self._truncated is not None:
            # first, before anything that can fail: the anchor now follows the cut log, so
            # this record is the only evidence left of what was cut
            log.error("audit log truncated: %s", self._truncated)
            await self.record("truncated", **self._truncated)
        seq, digest = self.audit.tip
        log.info("audit log %s resumes after seq %d hash %s", self.audit.path, seq, digest)
        try:
            async with (
                _owned_client(
                    self._auth0_http, transport=bounded_transport(AUTH0_MAX_IN_FLIGHT)
                ) as auth0_http,
                _owned_client(
                    self._proxy_http, follow_redirects=False, cookies=_no_cookies()
                ) as proxy_http,
            ):
                approver = self._approver
                if approver is None and self.config.auth0 is not None:
                    approver = self._build_approver(auth0_http)
                approvals = Approvals(
                    approver=approver,
                    record=self.record,
                    now=self._now,
                    max_pending=self.config.daemon.max_pending,
                    max_pending_per_caller=self.config.daemon.max_pending_per_caller,
                    ciba_starts_per_minute=self.config.daemon.ciba_starts_per_minute,
                    ciba_starts_per_minute_per_caller=(
                        self.config.daemon.ciba_starts_per_minute_per_caller
                    ),
                    authorization_details=bool(
                        self.config.auth0 and self.config.auth0.authorization_details
                    ),
                    offline_access=bool(self.config.auth0 and self.config.auth0.offline_access),
                )
                self.broker = Broker(approvals=approvals, record=self.record, http=proxy_http)
                self._auth0_state = getattr(approver, "state", None)
                self.proposals = ProposalDesk(
                    approver,
                    self.record,
                    authorization_details=bool(
                        self.config.auth0 and self.config.auth0.authorization_details
                    ),
                )
                self.missing_secrets = await self._missing_secrets()
                await self.record(
                    "start",
                    pid=os.getpid(),
                    version=self.version,
                    socket=str(self.listener.path),
                    activated=self.listener.activated,
                    config=self.config.source,
                    recovered=self.audit.recovered,
                )
                await self.keeper.adopt()
                async with trio.open_nursery() as nursery:
                    self._cancel = nursery.cancel_scope
                    await nursery.start(self.broker.serve)
                    await nursery.start(self.checker.serve)
                    await nursery.start(self.record.serve)
                    await nursery.start(log_tip, self.audit)
                    nursery.start_soon(self._accept_loop, nursery)
                    notify(f"READY=1\nSTATUS=listening on {self.listener.path}")
                    log.info("aegisd %s listening on %s", self.version, self.listener.path)
                    task_status.started(self.listener.path)
                    await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                notify("STOPPING=1")
                self.listener.close()
                with contextlib.suppress(AegisError):  # the log may be what failed
                    await self.record.flush()
                    await self.record("stop", pid=os.getpid())
                seq, digest = self.audit.tip
                log.info("audit log %s ends at seq %d hash %s", self.audit.path, seq, digest)
                self.audit.close()
                if self.recorder.anchor is not None:
                    self.recorder.anchor.close()
                lock.release()

    async def _missing_secrets(self) -> list[str]:
        """Warn at start about secrets the config needs and the backend lacks.

        Not a failure: inspection (status, pending, audit) must still work, and the operator
        may add the secret while the daemon runs (the keyring is read at each use).
        """
        needed = needed_secrets(self.config)
        if not needed:
            return []
        try:
            store = self._secrets or open_secret_store(self.config.secrets)
            missing = [name for name in needed if not await store.present(name)]
        except AegisError as exc:
            log.warning("secret store unavailable (%s): approvals will fail", exc.message)
            return list(needed)
        for name in missing:
            fix = (
                f"set {env_var_name(name)} in aegisd's environment"
                if self.config.secrets.backend == "env"
                else f"run `aegisctl secrets set {name}`"
            )
            log.warning(
                "secret %s is missing from the %s backend: approvals will fail until you %s",
                name,
                self.config.secrets.backend,
                fix,
            )
        return missing

    def _build_approver(self, http: httpx.AsyncClient) -> Approver:
        from aegisd.auth0.client import Auth0Client

        assert self.config.auth0 is not None
        secrets = self._secrets or open_secret_store(self.config.secrets)
        client: Approver = Auth0Client(self.config.auth0, secrets, http, now=self._now)
        return client

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM: stop accepting, end pending work with ``shutting_down``, then exit."""
        if self.stopping:
            return
        self.stopping = True
        log.info("stopping")
        if self.listener is not None:
            self.listener.sock.close()
        self.broker.shutdown()
        for conn in list(self._connections.values()):
            conn.shutdown()
        with trio.move_on_after(grace):
            # bounded by ``grace`` and only at shutdown: polling beats threading an Event
            # through every connection for the one moment it would be used
            while any(c._inflight for c in self._connections.values()):  # noqa: ASYNC110
                await trio.sleep(0.01)
        if self._cancel is not None:
            self._cancel.cancel()

    async def _accept_loop(self, nursery: trio.Nursery) -> None:
        assert self.listener is not None
        listener = trio.SocketListener(self.listener.sock)
        while not self.stopping:
            try:
                stream = await listener.accept()
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("accept: %s; backing off", exc.strerror)
                    await trio.sleep(0.1)
                    continue
                raise
            self._next_conn += 1
            # The caps per peer, per uid and in total, and eviction, need the peer: they are
            # applied once it is identified (``admit``). This bound only caps the sockets
            # held meanwhile, and those being refused.
            if len(self._connections) >= self.config.daemon.max_connections + _ADMISSION_SLACK:
                nursery.start_soon(self._refuse_busy, stream)
                continue
            conn = Connection(self, stream, self._next_conn)
            self._connections[conn.conn_id] = conn
            nursery.start_soon(self._run_connection, conn)

    async def _run_connection(self, conn: Connection) -> None:
        try:
            await conn.run()
        except Exception:
            log.exception("connection %d crashed", conn.conn_id)
        finally:
            self._connections.pop(conn.conn_id, None)
            self.limits.release(conn)

    async def _refuse_busy(self, stream: trio.SocketStream) -> None:
        err = RateLimited(
            f"aegisd has {self.config.daemon.max_connections} connections open", retry_after=1.0
        )
        with trio.move_on_after(1.0):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(
                    wire.encode(wire.Error(code=err.code, message=err.message, retry_after=1.0))
                )
        await trio.aclose_forcefully(stream)

    # ---- Host protocol for connections ------------------------------------------------------

    def admit(self, conn: Connection) -> None:
        """Per-peer, per-uid and total caps once the peer is known (``conn_limits.py``)."""
        self.limits.admit(conn)

    async def identify(self, stream: trio.SocketStream) -> tuple[PeerIdentity, CallerRule | None]:
        sock = stream.socket
        try:
            # /proc reads are local and fast; a thread hop would cost more than it saves
            peer = read_peer(sock)  # type: ignore[arg-type]
        except PeerRejected:
            await self.record("peer_rejected", reason="peer vanished during identification")
            raise
        except OSError as exc:
            await self.record("peer_rejected", reason=f"cannot identify peer ({exc.strerror})")
            raise PeerRejected() from None
        if not uid_allowed(peer.uid, os.getuid(), self.config.daemon.allowed_uids):
            await self.record(
                "peer_rejected", pid=peer.pid, uid=peer.uid, exe=peer.exe, reason="uid not allowed"
            )
            log.info(
                "pid %d rejected: uid %d is not allowed (exe %s, argv %r)",
                peer.pid,
                peer.uid,
                peer.exe or "?",
                " ".join(peer.argv)[:200],
            )
            raise PeerRejected()
        digest = None
        if self._needs_hash:
            digest = self._hasher.cached(peer)
            if digest is None:
                digest = await trio.to_thread.run_sync(self._hasher.digest, peer)
        rule = match_caller(peer, self.policy.callers, digest)
        if rule is None:
            # info, not debug: a caller rule that misses the real interpreter is the most
            # likely first failure, and the operator needs to see what aegisd saw
            log.info("pid %d: %s", peer.pid, explain_no_match(peer, self.policy.callers))
        return peer, rule

    async def inspect(
        self, msg: wire.ClientMessage, peer: PeerIdentity, rule: CallerRule | None
    ) -> wire.DaemonMessage:
        if isinstance(msg, wire.Status):
            # other accounts' processes only for an operator (as /proc shows them to no one else)
            everyone = sees_everything(peer, rule, self._mode)
            return await self._status(msg.id, None if everyone else peer.uid)
        # who may see and cancel which pending approvals: aegisd/daemon/inspection.py
        return await self.inspection.answer(msg, peer, rule, self.broker)

    async def _status(self, req_id: int, uid: int | None) -> wire.StatusReport:
        verified, verifying = await self.checker.check(wait=_STATUS_VERIFY_WAIT)
        audit = audit_fields(
            verified,
            verifying=verifying,
            tip=self.audit.tip,
            bytes_written=self.audit.bytes_written,
            bytes_verified=self.checker.bytes_verified,
            uptime=trio.current_time() - self._started,
            suppressed=self.record.limiter.suppressed_total,
            suppressing_peers=len(self.record.peers_suppressed),
            config=self.config.audit,
        )
        typed: dict[str, str | int | float | bool | None] = {}
        if callable(self._auth0_state):
            try:
                typed = {
                    str(k): v if v is None or isinstance(v, str | int | float | bool) else str(v)
                    for k, v in self._auth0_state().items()
                }
            except Exception:  # status must answer even if the Auth0 client misbehaves
                typed = {"state": "unknown"}
        elif self.config.auth0 is None:
            typed = {"state": "not configured"}
        auth0 = {k: str(v) for k, v in typed.items()}
        return wire.StatusReport(
            id=req_id,
            daemon_version=self.version,
            pid=os.getpid(),
            uptime=round(trio.current_time() - self._started, 3),
            socket=str(self.listener.path if self.listener else ""),
            config=self.config.source,
            peers=[
                wire.PeerInfo(
                    uid=c.peer.uid,
                    pid=c.peer.pid,
                    exe=c.peer.exe,
                    caller=c.rule.name if c.rule else None,
                    exe_verified=c.peer.exe_verified,
                )
                for c in self._connections.values()
                if c.peer is not None and uid in (None, c.peer.uid)
            ],
            pending=self.broker.pending_count,
            audit_log=str(self.audit.path),
            auth0=auth0,
            actions=len(self.policy.actions),
            callers=len(self.policy.callers),
            mode=self._mode,
            daemon_uid=os.getuid(),
            daemon_user=self._user,
            hardening=self._hardening,
            policy_sha256=self.keeper.active.sha256,
            policy_source=self.keeper.active.source,
            policy_generation=self.policy_generation,
            auth0_state=typed,
            missing_secrets=self.missing_secrets,
            audit_ok=audit.ok,
            audit_detail=audit.detail,
            audit_tip_seq=audit.tip_seq,
            audit_tip_hash=audit.tip_hash,
            audit_pruned=audit.pruned,
            audit_verifying=audit.verifying,
            audit_bytes_per_hour=audit.bytes_per_hour,
            audit_suppressed=audit.suppressed,
            audit_warnings=audit.warnings,
        )

    @property
    def policy_generation(self) -> int:
        """0 at start, bumped by every reload and applied proposal."""
        return self.keeper.generation

    async def policy_changed(self, seen: int) -> int:
        """The policy generation, once it differs from ``seen`` (``Watch`` requests)."""
        while self.policy_generation == seen:
            await self._policy_event.wait()
        return self.policy_generation

    # ---- reload --------------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self.keeper.config

    @property
    def policy(self) -> Policy:
        return self.keeper.policy

    async def reload(self) -> bool:
        """SIGHUP: re-read the config; swap the policy atomically or keep the old one."""
        return not await self.keeper.reload()

    def _on_policy_swap(self, new_policy: Policy, changed: list[str]) -> int:
        forgotten = self.broker.forget_remembered(changed) if hasattr(self, "broker") else 0
        self._needs_hash = any(rule.sha256 for rule in new_policy.callers)
        for conn in self._connections.values():
            if conn.peer is not None:  # re-match rules so a removed caller loses access now
                digest = self._hasher.cached(conn.peer)
                conn.rule = match_caller(conn.peer, new_policy.callers, digest)
        self._policy_event.set()  # Watch requests: the policy changed
        self._policy_event = trio.Event()
        return forgotten

    async def propose(
        self,
        msg: wire.ProposePolicy,
        peer: PeerIdentity,
        send: Callable[[wire.Pending], Awaitable[None]],
    ) -> wire.DaemonMessage:
        return await self.proposals.propose(
            msg.id, msg.text, current=self.config, peer=peer, send=send, apply=self.keeper.apply
        )


def _no_cookies() -> http.cookiejar.CookieJar:
    """A jar that keeps nothing: a cookie one proxied API call sets must never ride along on
    another caller's request (or on an approval-free one)."""
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


class _owned_client:
    """Use the given httpx client, or create (and close) one."""

    def __init__(
        self,
        given: httpx.AsyncClient | None,
        *,
        transport: Callable[[], httpx.AsyncBaseTransport] | None = None,
        **kwargs: object,
    ) -> None:
        self._given = given
        self._transport = transport
        self._kwargs = kwargs
        self._own: httpx.AsyncClient | None = None

    async def __aenter__(self) -> httpx.AsyncClient:
        if self._given is not None:
            return self._given
        kwargs = dict(self._kwargs)
        if self._transport is not None:
            kwargs["transport"] = self._transport()  # built here: it needs a trio run
        self._own = httpx.AsyncClient(trust_env=False, **kwargs)  # type: ignore[arg-type]
        return self._own

    async def __aexit__(self, *exc: object) -> None:
        if self._own is not None:
            with trio.CancelScope(shield=True):
                await self._own.aclose()
