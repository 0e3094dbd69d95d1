"""``aegisctl policy check``: every problem of a config in one run, and what the phone shows.

Owns the check's report: the structural and config-level problems (``config.check_config``,
with file, line, key, expected and allowed values, did-you-mean), the policy's semantic
problems (``policy.compile_policy``, located by line too, run on the valid part of the file so
one run shows everything), each binding-message template rendered as the phone will show it
(``binding.render_binding_message`` with sample values) and caller-rule exe patterns that
match nothing here, and a file aegisd would refuse as unsafe (``trusted_file``: owner, mode,
symlink, directories). Reads files only; it never talks to the daemon.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from aegisctl.executables import exe_pattern_warnings, resolved_executables
from aegisctl.outputs import BindingPreview, PolicyCheckOutput
from aegisd.binding import pattern_max_length, render_binding_message
from aegisd.config import ActionSpec, Config, check_config
from aegisd.config_check import KeyLines, Problem
from aegisd.errors import ConfigError, UnsafeFile
from aegisd.policy import compile_policy
from aegisd.trusted_file import read_trusted

__all__ = ["check_file", "preview"]

_SAMPLE_DIGEST: Final = "a1b2c3" + "0" * 58
_LONGEST_CAP: Final = 120  # longer values are all cut the same way on the phone
_POLICY_PROBLEM: Final = re.compile(r"^(?P<file>.*?): key (?P<key>\S+?): (?P<msg>.*)$", re.S)


def _longest_length(pattern: str) -> int:
    """The most characters ``pattern`` accepts, capped (unbounded patterns get the cap)."""
    width = pattern_max_length(pattern)
    return _LONGEST_CAP if width is None else min(width, _LONGEST_CAP)


def preview(name: str, spec: ActionSpec) -> BindingPreview | None:
    """The phone text for typical values (each parameter's name) and for the longest ones."""
    if not spec.binding_message:
        return None
    typical = {p: p.upper() for p in spec.params}
    longest = {p: "x" * max(1, _longest_length(pat)) for p, pat in spec.params.items()}
    try:
        return BindingPreview(
            action=name,
            template=spec.binding_message,
            typical=render_binding_message(spec.binding_message, typical, _SAMPLE_DIGEST),
            longest=render_binding_message(spec.binding_message, longest, _SAMPLE_DIGEST),
        )
    except ValueError:  # a malformed template: its problem is already in the report
        return None


def _policy_problems(cfg: Config, lines: KeyLines, source: str) -> tuple[list[Problem], list[str]]:
    """The policy's semantic problems, located by line, and its warnings."""
    try:
        return [], list(compile_policy(cfg).warnings)
    except ConfigError as exc:
        found: list[Problem] = []
        for text in exc.problems:
            m = _POLICY_PROBLEM.match(text)
            if m is None:
                found.append(Problem(file=source, message=text.removeprefix(f"{source}: ")))
                continue
            key = m.group("key")
            found.append(
                Problem(file=source, line=lines.line_of_key(key), key=key, message=m["msg"])
            )
        return found, []


def check_file(path: str) -> PolicyCheckOutput:
    """Check one config file; never raises for what is in the file."""
    resolved = resolved_executables()
    unsafe: list[Problem] = []
    try:
        try:
            data = read_trusted(path, what="config")  # what aegisd itself would refuse
        except UnsafeFile as exc:
            unsafe.append(Problem(file=path, message=exc.message))
            data = Path(path).read_bytes()  # and the rest of the report, all in one run
    except ConfigError as exc:  # larger than any config
        return PolicyCheckOutput(
            ok=False,
            file=path,
            problems=[Problem(file=path, message=exc.message)],
            resolved=resolved,
        )
    except OSError as exc:
        reason = "file not found" if isinstance(exc, FileNotFoundError) else exc.strerror
        return PolicyCheckOutput(
            ok=False,
            file=path,
            problems=[Problem(file=path, message=str(reason))],
            resolved=resolved,
        )
    cfg, problems = check_config(data, path)
    problems[:0] = unsafe
    if cfg is None:
        return PolicyCheckOutput(ok=False, file=path, problems=problems, resolved=resolved)
    lines = KeyLines(data.decode("utf-8", "replace"))
    seen = {(p.key, p.message) for p in problems}
    policy_problems, warnings = _policy_problems(cfg, lines, path)
    for extra in policy_problems:
        if (extra.key, extra.message) not in seen:  # e.g. a bad regex both layers notice
            seen.add((extra.key, extra.message))
            problems.append(extra)
    problems.sort(key=lambda p: p.line or 0)
    previews = [p for name, spec in cfg.actions.items() if (p := preview(name, spec)) is not None]
    return PolicyCheckOutput(
        ok=not problems,
        file=path,
        actions=len(cfg.actions),
        callers=len(cfg.callers),
        problems=problems,
        warnings=warnings,
        binding_messages=previews,
        exe_warnings=exe_pattern_warnings(cfg, resolved),
        resolved=resolved,
    )
