"""Binding messages: what the person reads on their phone before approving.

Owns the rendering of an action's ``binding_message`` template into the text sent to Auth0's
``/bc-authorize`` and the load-time checks of such templates. Auth0 allows at most 64
characters from "alphanumeric and ``+-_.,:#``" (``reference/auth0-protocol.md`` §1); spaces
appear in Auth0's own examples, so they are kept. Every message ends with `` #`` and the first
hex characters of the request digest, so the person can match the push on the phone with the
audit record; the body is shortened to make room, the digest never is.

Pure code: no I/O, no clock, no state. It must not accept free text from the agent as the
template: templates come from the policy, only parameter values come from the caller, and
those can never produce a ``#`` (so a value cannot fake a digest).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Final

__all__ = [
    "DIGEST_CHARS",
    "MAX_BINDING_MESSAGE",
    "is_valid_binding_message",
    "reduce_text",
    "render_binding_message",
    "template_problems",
]

MAX_BINDING_MESSAGE: Final = 64
DIGEST_CHARS: Final = 6
_SUFFIX_LEN: Final = len(" #") + DIGEST_CHARS
_ELLIPSIS: Final = ".."

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


def render_binding_message(template: str, params: Mapping[str, str], digest: str) -> str:
    """Render the text the person sees on their phone.

    Placeholders ``{name}`` are replaced by the parameter values (``{{``/``}}`` are literal
    braces, which are then reduced like any other symbol). The result uses only letters,
    digits, space and ``+-_.,:#``, is at most 64 characters and always ends with
    `` #`` plus the first six hex digits of ``digest``. A body that is too long is cut and
    marked with ``..``.

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
    pieces: list[str] = []
    try:
        fields = _fields(template)
    except ValueError as exc:
        raise ValueError(f"malformed binding message template: {exc}") from None
    for literal, name, spec, conversion in fields:
        pieces.append(_map_chars(literal, allow_hash=True))
        if name is None:
            continue
        if spec or conversion or not _IDENTIFIER.fullmatch(name):
            raise ValueError(f"unsupported placeholder {{{name}}} in binding message template")
        if name not in params:
            raise ValueError(f"binding message template names unknown parameter {{{name}}}")
        # '#' is reserved for the digest: a value must not be able to fake one
        pieces.append(_map_chars(params[name], allow_hash=False))
    body = " ".join("".join(pieces).split())
    room = MAX_BINDING_MESSAGE - len(" ") - len(suffix)
    if len(body) > room:
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
        is empty or cannot fit in 64 characters together with the digest, and parameters
        whose pattern accepts the empty string (the person would see nothing in their place).
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
