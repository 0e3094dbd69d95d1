"""One dev tenant's state, in one object the endpoints share.

Owns the wiring of the parts (keys, clients, users, CIBA book, token mint, stats, fault
switches, demo repositories) and the operations a person or test performs on them: approve,
deny, list pending, rotate keys, change faults. Time comes from ``trio.current_time()`` for
durations and from the injected ``wall`` callable for stamps. It must not serve HTTP
(``app.py`` and the endpoint modules do) and holds no global state.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import final

import trio

from aegisd.devtenant.ciba import CibaBook, CibaRequest, PendingRequest, pending_view
from aegisd.devtenant.clients import ClientRegistry
from aegisd.devtenant.faults import FaultState
from aegisd.devtenant.options import DevTenantOptions, Faults
from aegisd.devtenant.statedir import LoadedState, save_key, save_users
from aegisd.devtenant.stats import TenantStats
from aegisd.devtenant.tokens import TokenMint

__all__ = ["Tenant", "UnknownRequest"]


class UnknownRequest(LookupError):
    """Raised by approve/deny when the id is not a pending CIBA request (unknown, answered
    or expired)."""


@final
class Tenant:
    """Shared state of one running dev tenant."""

    def __init__(
        self,
        options: DevTenantOptions,
        loaded: LoadedState,
        *,
        issuer: str,
        wall: Callable[[], float],
    ) -> None:
        self.options = options
        self.issuer = issuer
        self.wall = wall
        self.keys = loaded.keys
        self.clients = ClientRegistry(loaded.clients, issuer=issuer)
        self.users = loaded.users
        self.ciba = CibaBook(
            issuer=issuer,
            interval=options.interval,
            default_expiry=options.default_expiry,
            max_requested_expiry=options.max_requested_expiry,
            per_user_per_minute=options.ciba_per_user_per_minute,
            slow_down_enforced=options.slow_down_enforced,
            slow_down_tolerance=options.slow_down_tolerance,
            rar_types=frozenset(options.rar_types),
        )
        self.tokens = TokenMint(
            self.keys,
            issuer=issuer,
            id_token_ttl=options.id_token_ttl,
            access_token_ttl=options.access_token_ttl,
            mgmt_token_ttl=options.mgmt_token_ttl,
            rar_omits_id_token=options.rar_omits_id_token,
        )
        self.stats = TenantStats()
        self.faults = FaultState(options.faults, seed=options.seed, injected=self.stats.faults)
        self.repos: list[str] = list(options.demo_repos)
        # Set by the server: called for each new CIBA request (auto-approve scheduling).
        self.on_started: Callable[[CibaRequest], None] | None = None

    @property
    def mgmt_audience(self) -> str:
        return self.issuer + "api/v2/"

    @property
    def state_dir(self) -> Path | None:
        return self.options.state_dir

    @staticmethod
    def mono() -> float:
        return trio.current_time()

    def pending(self) -> list[PendingRequest]:
        mono = self.mono()
        return [pending_view(r, mono) for r in self.ciba.pending(mono)]

    def approve(self, auth_req_id: str) -> None:
        """Approve a pending request, as the person would on the phone.

        Raises:
            UnknownRequest: no pending request has this id.
        """
        try:
            self.ciba.approve(auth_req_id, mono=self.mono(), wall=self.wall())
        except KeyError:
            raise UnknownRequest(auth_req_id) from None
        self.stats.approvals += 1

    def deny(self, auth_req_id: str) -> None:
        """Deny a pending request.

        Raises:
            UnknownRequest: no pending request has this id.
        """
        try:
            self.ciba.deny(auth_req_id, mono=self.mono())
        except KeyError:
            raise UnknownRequest(auth_req_id) from None
        self.stats.denials += 1

    def rotate_keys(self, keep_old: bool | None = None) -> str:
        """New signing key (persisted with a state dir); returns its ``kid``."""
        kid = self.keys.rotate(self.mono(), keep_old=keep_old)
        if self.state_dir is not None:
            save_key(self.state_dir, self.keys)
        return kid

    def set_faults(self, faults: Faults) -> None:
        self.faults.set(faults)

    async def persist_users(self) -> None:
        """Write ``users.toml`` after a provider token changed (no-op without a state dir)."""
        if self.state_dir is not None:
            await trio.to_thread.run_sync(save_users, self.state_dir, self.users)

    def issued_secrets(self) -> list[str]:
        """Every secret or token value this tenant issued: client secrets, ID/access/refresh
        and Management API tokens, provider tokens. (``auth_req_id`` values are handles, not
        secrets, and are not included.)"""
        values = [c.client_secret for c in self.clients.all()]
        values += self.tokens.issued()
        values += self.users.all_tokens()
        return values
