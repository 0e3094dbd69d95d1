"""What ``Status`` says about the audit log: verdict, tip, pruning, growth and floods.

Owns turning the checker's result and the writer's counters into the ``StatusReport`` audit
fields, and the warnings ``status`` and ``doctor`` show (history pruned, the log growing fast,
refusals folded into summaries). Pure: no I/O, no clock; it must not verify anything itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from aegisd.config import AuditConfig
from aegisd.daemon.audit_chain import VerifyResult

__all__ = ["AuditStatus", "audit_fields"]

# below this much written, a rate is noise (the start record alone, a second after start)
_MIN_SECONDS = 60.0


@dataclass(frozen=True)
class AuditStatus:
    """The audit fields of ``wire.StatusReport`` (same meaning, without the prefix)."""

    ok: bool
    detail: str
    tip_seq: int
    tip_hash: str
    pruned: int
    verifying: bool
    bytes_per_hour: float
    suppressed: int
    warnings: list[str]


def audit_fields(
    verified: VerifyResult | None,
    *,
    verifying: bool,
    tip: tuple[int, str],
    bytes_written: int,
    bytes_verified: int,
    uptime: float,
    suppressed: int,
    suppressing_peers: int,
    config: AuditConfig,
) -> AuditStatus:
    """What ``Status`` reports about the log."""
    warnings: list[str] = []
    if verified is None:
        ok = True
        detail = f"verifying the audit log: {bytes_verified / 1e6:.1f} MB checked so far"
        pruned = 0
    else:
        ok = verified.ok
        detail = verified.summary()
        # pruned before this daemon started (where the chain starts), or while it ran (the
        # latest ``pruned`` record it verified)
        claim = verified.prune_claim
        pruned = max(verified.pruned, claim[0] - 1 if claim else 0)
        if verifying:
            detail += f" (catching up: {bytes_verified / 1e6:.1f} MB checked)"
    per_hour = bytes_written / uptime * 3600 if uptime >= _MIN_SECONDS else 0.0
    if pruned:
        warnings.append(
            f"{pruned} records pruned by rotation ([audit] keep_files = {config.keep_files}); "
            "the chain vouches for where it starts"
        )
    limit = config.growth_warning_bytes_per_hour
    if limit and per_hour > limit:
        warnings.append(
            f"the audit log grows {per_hour / 1e6:.1f} MB/hour (warning above "
            f"{limit / 1e6:.1f}); a client may be flooding the daemon"
        )
    if suppressed:
        warnings.append(
            f"{suppressed} refusals from {suppressing_peers} peer(s) were over the per-peer "
            "budget and recorded as refusals_suppressed summaries"
        )
    return AuditStatus(
        ok=ok,
        detail=detail,
        tip_seq=tip[0],
        tip_hash=tip[1],
        pruned=pruned,
        verifying=verifying or verified is None,
        bytes_per_hour=round(per_hour, 1),
        suppressed=suppressed,
        warnings=warnings,
    )
