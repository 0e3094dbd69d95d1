"""Binding messages: what the person reads on their phone before approving.

Owns the rendering of an action's ``binding_message`` template into the text sent to Auth0's
``/bc-authorize`` and the load-time checks of such templates. Auth0 allows at most 64
characters from "alphanumeric and ``+-_.,:#``" (``reference/auth0-protocol.md`` §1); spaces
appear in Auth0's own examples, so they are kept. Every message ends with `` #`` and the first
hex characters of the request digest, so the person can match the push on the phone with the
audit record; the body is shortened to make room, the digest never is. Long parameter values
are shortened in the middle (``acme-plat..ngineering``) so both ends stay visible; at load
time the longest value of each parameter's pattern tells whether that can happen (a warning)
or would leave a parameter unreadable (a problem).

Pure code: no I/O, no clock, no state. It must not accept free text from the agent as the
template: templates come from the policy, only parameter values come from the caller, and
those can never produce a ``#`` (so a value cannot fake a digest).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterable, Mapping
from re import _parser as sre_parser  # type: ignore[attr-defined]
from typing import Final

__all__ = [
    "DIGEST_CHARS",
    "MAX_BINDING_MESSAGE",
    "MIN_SHOWN",
    "is_valid_binding_message",
    "pattern_max_length",
    "reduce_text",
    "render_binding_message",
    "template_problems",
    "template_warnings",
]

MAX_BINDING_MESSAGE: Final = 64
DIGEST_CHARS: Final = 6
_SUFFIX_LEN: Final = len(" #") + DIGEST_CHARS
_ELLIPSIS: Final = ".."
# A shortened value keeps at least three characters at each end ("abc..xyz"); a template whose
# parameters cannot all get that much room is refused.
MIN_SHOWN: Final = 8
# what the policy accepts at most for any value (policy._MAX_PARAM_LEN); "unbounded" above it
_LONGEST_VALUE: Final = 4096

_ALLOWED: Final = frozenset(string.ascii_letters + string.digits + " +-_.,:#")
_VALID_MESSAGE: Final = re.compile(r"[A-Za-z0-9 +\-_.,:#]{1,64}")
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEX_PREFIX: Final = re.compile(rf"(?:[A-Za-z0-9-]+:)?([0-9a-fA-F]{{{DIGEST_CHARS}}})")

# Characters that carry meaning in typical templates ("owner/repo", "a & b") get a readable
# stand-in from the allowed set instead of vanishing into a space.
_STAND_INS: Final = {"/": ":", "\\": ":", "&": "+", "=": ":", "|": ":", ";": ","}
# Apostrophes and quotes are dropped ("don't" -> "dont") rather than split into two words.
_DROPPED: Final = frozenset("'\"`\u2018\u2019\u201c\u201d")


def _map_chars(text: str, *, allow_hash: bool) -> str:
    """Map every character into the alphabet, one for one (spaces not yet collapsed)."""
    out: list[str] = []
    for ch in unicodedata.normalize("NFKD", text):
        if unicodedata.combining(ch) or ch in _DROPPED:
            continue
        ch = _STAND_INS.get(ch, ch)
        out.append(ch if ch in _ALLOWED and (allow_hash or ch != "#") else " ")
    return "".join(out)


def reduce_text(text: str, *, allow_hash: bool = True) -> str:
    """Reduce ``text`` to Auth0's binding-message alphabet.

    Accents are stripped (``é`` -> ``e``), a few symbols get a stand-in (``/`` -> ``:``,
    ``&`` -> ``+``), quotes are dropped, anything else becomes a space, and runs of spaces
    collapse to one. Leading and trailing spaces are removed.

    Args:
        text: any text.
        allow_hash: whether ``#`` may stay; parameter values are reduced without it.
    """
    return " ".join(_map_chars(text, allow_hash=allow_hash).split())


def _digest_hex(digest: str) -> str:
    m = _HEX_PREFIX.match(digest)
    if m is None:
        raise ValueError(
            f"digest must start with at least {DIGEST_CHARS} hex digits (optionally 'algo:')"
        )
    return m.group(1).lower()


def _fields(template: str) -> list[tuple[str, str | None, str | None, str | None]]:
    """``string.Formatter`` parse (the same syntax as ``policy``'s URL templates)."""
    return list(string.Formatter().parse(template))


def _pieces(template: str) -> list[tuple[str, str | None]]:
    """(literal mapped into the alphabet, placeholder name or None) for each template field."""
    try:
        fields = _fields(template)
    except ValueError as exc:
        raise ValueError(f"malformed binding message template: {exc}") from None
    out: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in fields:
        if name is not None and (spec or conversion or not _IDENTIFIER.fullmatch(name)):
            raise ValueError(f"unsupported placeholder {{{name}}} in binding message template")
        out.append((_map_chars(literal, allow_hash=True), name))
    return out


def _assemble(pieces: list[tuple[str, str | None]], values: Mapping[str, str]) -> str:
    return " ".join("".join(lit + (values[n] if n else "") for lit, n in pieces).split())


def _middle(value: str, width: int) -> str:
    """``value`` in at most ``width`` characters, its middle replaced by ``..``."""
    if len(value) <= width:
        return value
    if width <= len(_ELLIPSIS):
        return value[: max(width, 0)]
    keep = width - len(_ELLIPSIS)
    head = keep // 2
    return value[:head] + _ELLIPSIS + value[len(value) - (keep - head) :]


def _allot(lengths: Mapping[str, int], counts: Mapping[str, int], budget: int) -> dict[str, int]:
    """Share ``budget`` characters among the parameters, shortest first: a value that fits its
    fair share is shown whole, and what it leaves goes to the longer ones (water-filling).
    A parameter named ``counts[n]`` times takes its width that many times."""
    widths: dict[str, int] = {}
    slots = sum(counts.values())
    for name in sorted(lengths, key=lambda n: lengths[n]):
        share = max(budget, 0) // slots if slots else 0
        widths[name] = min(lengths[name], share)
        budget -= widths[name] * counts[name]
        slots -= counts[name]
    return widths


def render_binding_message(template: str, params: Mapping[str, str], digest: str) -> str:
    """Render the text the person sees on their phone.

    Placeholders ``{name}`` are replaced by the parameter values (``{{``/``}}`` are literal
    braces, which are then reduced like any other symbol). The result uses only letters,
    digits, space and ``+-_.,:#``, is at most 64 characters and always ends with
    `` #`` plus the first six hex digits of ``digest``. When the values do not fit, each long
    value is shortened *in the middle* (``infras..uction``), so both of its ends stay visible
    and two long values that differ only at one end stay distinguishable; values that fit
    their share of the room are shown whole, the fixed text is never cut.

    Args:
        template: the policy's ``binding_message`` (checked by ``template_problems``).
        params: the request's validated parameters.
        digest: the request digest, hex (an ``algo:`` prefix is allowed).

    Returns:
        The binding message.

    Raises:
        ValueError: the template is malformed or names a parameter not in ``params``, or the
            digest has too few hex digits. ``template_problems`` finds the template cases at
            load time, so they only happen with an unchecked template.
    """
    suffix = "#" + _digest_hex(digest)
    pieces = _pieces(template)
    values: dict[str, str] = {}
    counts: dict[str, int] = {}
    for _, name in pieces:
        if name is None:
            continue
        if name not in params:
            raise ValueError(f"binding message template names unknown parameter {{{name}}}")
        # '#' is reserved for the digest: a value must not be able to fake one
        values[name] = " ".join(_map_chars(params[name], allow_hash=False).split())
        counts[name] = counts.get(name, 0) + 1
    body = _assemble(pieces, values)
    room = MAX_BINDING_MESSAGE - len(" ") - len(suffix)
    if len(body) > room:
        lengths = {n: len(v) for n, v in values.items()}
        fixed = len(body) - sum(lengths[n] * counts[n] for n in values)
        widths = _allot(lengths, counts, room - fixed)
        body = _assemble(pieces, {n: _middle(v, widths[n]) for n, v in values.items()})
    if len(body) > room:  # fixed text too long (refused at load time) or spaces shifted
        body = body[: room - len(_ELLIPSIS)].rstrip(" ") + _ELLIPSIS
    return f"{body} {suffix}" if body else suffix


def is_valid_binding_message(message: str) -> bool:
    """Whether ``message`` fits Auth0's documented limits (length and alphabet)."""
    return _VALID_MESSAGE.fullmatch(message) is not None


def template_problems(
    template: str, param_names: Iterable[str], param_patterns: Mapping[str, str]
) -> list[str]:
    """Problems of a binding-message template, for the policy's load-time checks.

    Args:
        template: the action's ``binding_message``.
        param_names: the parameters the action declares.
        param_patterns: their regular expressions (name -> pattern).

    Returns:
        Human sentences, empty when the template is usable. Reported: malformed braces,
        placeholders that are not plain names or name no declared parameter, fixed text that
        is empty or cannot fit in 64 characters together with the digest, parameters
        whose pattern accepts the empty string (the person would see nothing in their place),
        and templates whose parameters at their longest could not each keep ``MIN_SHOWN``
        characters when shortened (``template_warnings`` covers milder shortening).
    """
    try:
        fields = _fields(template)
    except ValueError as exc:
        return [f"malformed template ({exc}); use {{name}} placeholders and {{{{ }}}} for braces"]
    declared = set(param_names)
    problems: list[str] = []
    fixed: list[str] = []
    seen: set[str] = set()
    for literal, name, spec, conversion in fields:
        fixed.append(literal)
        if name is None:
            continue
        if spec or conversion or not _IDENTIFIER.fullmatch(name):
            problems.append(
                f"placeholder {{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} is not a plain {{name}}"
            )
            continue
        if name not in declared:
            problems.append(f"placeholder {{{name}}} names no declared parameter")
            continue
        if name in seen:
            continue
        seen.add(name)
        pattern = param_patterns.get(name)
        if pattern is not None:
            try:
                if re.fullmatch(pattern, "") is not None:
                    problems.append(
                        f"parameter {name!r} may be empty (its pattern accepts ''), so the "
                        "approver could see nothing where it stands; require at least one "
                        "character"
                    )
            except re.error:
                pass  # config loading reports invalid patterns itself
    fixed_text = reduce_text(" ".join(fixed))
    problem = _fit(template, param_patterns)[0]
    if problem is not None:
        problems.append(problem)
    if not fixed_text and not seen:
        problems.append("the template is empty after reduction to Auth0's character set")
    room = MAX_BINDING_MESSAGE - _SUFFIX_LEN
    if len(fixed_text) > room:
        problems.append(
            f"fixed text is {len(fixed_text)} characters after reduction; at most {room} fit "
            f"in Auth0's {MAX_BINDING_MESSAGE} together with the ' #' + {DIGEST_CHARS}-digit "
            "digest"
        )
    return problems


def pattern_max_length(pattern: str) -> int | None:
    """The longest string ``pattern`` can match, in characters; None when unbounded (or the
    pattern cannot be analysed). ``^``/``$`` and lookarounds count for nothing."""
    try:
        _, hi = sre_parser.parse(pattern).getwidth()
    except (re.error, RecursionError, OverflowError):
        return None
    return None if hi >= _LONGEST_VALUE else int(hi)


def template_warnings(template: str, param_patterns: Mapping[str, str]) -> list[str]:
    """What the person may not see whole, for the policy's load-time warnings.

    From each parameter's pattern the longest value is computed; if the message with every
    parameter at its longest does not fit in front of the digest, the sentence names the
    parameters that would be shortened in the middle and the widths they keep.
    """
    warning = _fit(template, param_patterns)[1]
    return [warning] if warning else []


def _fit(template: str, param_patterns: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(problem, warning) about the room the parameters get at their longest."""
    try:
        pieces = _pieces(template)
    except ValueError:
        return None, None  # template_problems reports it
    longest: dict[str, int] = {}
    unbounded: set[str] = set()
    counts: dict[str, int] = {}
    for _, name in pieces:
        if name is None or name not in param_patterns:
            continue
        counts[name] = counts.get(name, 0) + 1
        hi = pattern_max_length(param_patterns[name])
        if hi is None:
            unbounded.add(name)
        longest[name] = _LONGEST_VALUE if hi is None else max(hi, 1)
    if not counts:
        return None, None
    fixed = len(_assemble(pieces, dict.fromkeys(counts, "x"))) - sum(counts.values())
    room = MAX_BINDING_MESSAGE - _SUFFIX_LEN
    worst = fixed + sum(longest[n] * counts[n] for n in counts)
    if worst <= room or fixed > room:  # fits; or the fixed text alone does not (reported)
        return None, None
    widths = _allot(longest, counts, room - fixed)
    if any(widths[n] < min(MIN_SHOWN, longest[n]) for n in counts):
        return (
            f"its {len(counts)} parameter(s) and {fixed} characters of fixed text leave a "
            f"parameter fewer than {MIN_SHOWN} of the {room} characters that fit before the "
            "digest; shorten the fixed text, name fewer parameters, or bound their patterns",
            None,
        )

    def described(n: str) -> str:
        size = "unbounded" if n in unbounded else f"up to {longest[n]}"
        return f"{{{n}}} ({size}) to {widths[n]}"

    short = [n for n in counts if widths[n] < longest[n]]
    return None, (
        f"with the longest values the patterns allow the message is {worst} characters where "
        f"{room} fit before the digest, so long values are shortened in the middle (like "
        f"{_middle('infrastructure-terraform-production', 22)!r}): "
        + ", ".join(described(n) for n in short)
        + " characters; `aegisctl pending` shows them whole"
    )
