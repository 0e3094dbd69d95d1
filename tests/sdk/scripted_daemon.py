"""Run the real aegisd ``Daemon`` with a scripted approver instead of Auth0 (test helper).

Usage: ``python scripted_daemon.py CONFIG ISSUED_FILE [DELAY]``. Everything is the real daemon
(socket, peer checks, policy, broker, proxy, audit) except the ``Approver`` seam: the outcome
of an approval is the word of the binding message that names one (``approve``, ``deny``,
``expire``, ``hang``, ``unavailable``, ``nocred``, ``crash``), so a test picks it through an
action parameter. Every token it hands out is appended to ISSUED_FILE for leak scans.
"""

from __future__ import annotations

import logging
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import trio

from aegisd.auth0.tokens import Approval, CibaStart, Credential
from aegisd.config import CredentialSpec, load_config
from aegisd.daemon.daemon import Daemon
from aegisd.daemon.main import run
from aegisd.errors import (
    ApprovalDenied,
    ApprovalExpired,
    ApprovalUnavailable,
    CredentialUnavailable,
)

OUTCOMES = ("approve", "deny", "expire", "hang", "unavailable", "nocred", "crash")


class ScriptedApprover:
    def __init__(self, issued: Path, delay: float) -> None:
        self.issued = issued
        self.delay = delay

    async def start_approval(
        self,
        *,
        binding_message: str,
        authorization_details: list[dict[str, object]] | None = None,
        offline_access: bool = False,
        scopes: Sequence[str] = (),
    ) -> CibaStart:
        words = binding_message.split()
        outcome = next((w for w in words if w in OUTCOMES), "approve")
        if outcome == "unavailable":
            raise ApprovalUnavailable("scripted: the approval service is unreachable")
        # the outcome rides in the request handle, as Auth0's state rides in auth_req_id
        return CibaStart(
            auth_req_id=f"{outcome}:{secrets.token_hex(8)}",
            expires_in=120,
            interval=1,
            expires_at=time.time() + 120,
            started_at=trio.current_time(),
        )

    async def wait_approval(self, start: CibaStart) -> Approval:
        outcome = start.auth_req_id.split(":", 1)[0]
        if outcome == "hang":
            await trio.sleep_forever()
        await trio.sleep(self.delay)
        if outcome == "deny":
            raise ApprovalDenied()
        if outcome == "expire":
            raise ApprovalExpired()
        if outcome == "crash":
            raise RuntimeError("scripted crash: this text must never reach a client")
        return Approval(
            access_token="scripted-ciba-" + secrets.token_hex(8),
            id_token_claims={"outcome": outcome},
            refresh_token=None,
            expires_at=time.time() + 300,
            scope="openid",
            sub="auth0|tester",
            latency=self.delay,
        )

    async def obtain_credential(self, spec: CredentialSpec, approval: Approval) -> Credential:
        if approval.id_token_claims.get("outcome") == "nocred":
            raise CredentialUnavailable()
        token = "aegis-test-secret-" + secrets.token_hex(16)
        with self.issued.open("a") as f:
            f.write(token + "\n")
        return Credential(
            access_token=token,
            token_type="Bearer",
            expires_at=time.time() + 300,
            scope="repo",
            kind=spec.kind,
            connection=spec.connection,
            path="token_vault" if spec.kind == "token_vault" else "ciba",
        )


def main() -> None:
    config = load_config(sys.argv[1])
    delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    daemon = Daemon(config, approver=ScriptedApprover(Path(sys.argv[2]), delay))
    trio.run(run, daemon)


if __name__ == "__main__":
    main()
