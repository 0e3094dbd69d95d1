"""``@with_async_authorization``: one line above a tool asks aegisd (and the phone) first.

Owns turning a tool call's arguments into an action's parameters, waiting through the
approval (as MCP progress when the tool got an MCP ``Context``), injecting the single-use
credential for the duration of the call and forgetting it afterwards. It must not import mcp
at module level nor keep a credential anywhere but the call's own ContextVar.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from types import MappingProxyType
from typing import Final, Literal, Protocol, TypeVar, cast

from aegisd.client._client import (
    AegisClient,
    Credentials,
    PendingCallback,
    PendingEvent,
    _call_back,
)
from aegisd.errors import AegisError

__all__ = ["ParamsSpec", "current_credentials", "with_async_authorization"]

# ---- the decorator -----------------------------------------------------------------------
#
# ``with_async_authorization`` turns "ask aegisd, wait for the phone, use the token once" into
# one line above a tool function. Rules it keeps:
#   * mcp is never imported here at module level: an MCP ``Context`` argument is recognised by
#     its type's module and its ``report_progress`` method, and the one mcp import (to build an
#     ``isError`` result) happens only inside a call that already received such a Context.
#   * the credential lives only for the duration of the wrapped call: it is passed as a keyword
#     argument and set in a ContextVar that is reset when the call ends; no module or closure
#     state ever holds it.

_CURRENT_CREDENTIALS: Final[contextvars.ContextVar[Credentials | None]] = contextvars.ContextVar(
    "aegis_current_credentials", default=None
)

ParamsSpec = (
    str | Sequence[str] | Mapping[str, str] | Callable[[Mapping[str, object]], Mapping[str, object]]
)
"""How a decorated tool's arguments become the action's parameters (see the decorator)."""

_R = TypeVar("_R")


def current_credentials() -> Credentials:
    """The credential of the innermost ``@with_async_authorization`` call now running.

    Raises:
        LookupError: called outside a decorated call (the credential is gone once it returns).
    """
    creds = _CURRENT_CREDENTIALS.get()
    if creds is None:
        raise LookupError(
            "no Aegis credential here: current_credentials() works only inside a function "
            "decorated with @with_async_authorization, while it runs"
        )
    return creds


class _ProgressContext(Protocol):
    async def report_progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None: ...


def _mcp_context(arguments: Mapping[str, object]) -> _ProgressContext | None:
    """The MCP SDK ``Context`` among the call's arguments, found without importing mcp."""
    for value in arguments.values():
        module = type(value).__module__
        if (module == "mcp" or module.startswith("mcp.")) and callable(
            getattr(value, "report_progress", None)
        ):
            return cast(_ProgressContext, value)
    return None


def _param_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _spec_names(params: ParamsSpec | None) -> list[str]:
    """Argument names a names/mapping spec refers to (for the decoration-time check)."""
    if params is None or callable(params):
        return []
    if isinstance(params, str):
        return [params]
    if isinstance(params, Mapping):
        return list(params.values())
    return list(params)


def _action_params(params: ParamsSpec | None, arguments: Mapping[str, object]) -> dict[str, str]:
    raw: Mapping[str, object]
    if params is None:
        return {}
    if isinstance(params, str):
        raw = {params: arguments.get(params)}
    elif isinstance(params, Mapping):
        raw = {name: arguments.get(arg) for name, arg in params.items()}
    elif callable(params):
        raw = params(MappingProxyType(dict(arguments)))
    else:
        raw = {name: arguments.get(name) for name in params}
    # None means "not given": the daemon then reports the missing parameter (InvalidParams)
    return {str(k): _param_text(v) for k, v in raw.items() if v is not None}


def _visible_signature(fn: Callable[..., object], hidden: str | None) -> inspect.Signature:
    """``fn``'s signature without the injected parameter, annotations evaluated if possible.

    MCPServer reads ``__signature__`` as is (it does not evaluate strings found there), so
    string annotations from ``from __future__ import annotations`` are resolved here, in the
    function's own module; when that fails (a forward reference) the raw ones are kept.
    """
    try:
        sig = inspect.signature(fn, eval_str=True)
    except (NameError, TypeError, SyntaxError):
        sig = inspect.signature(fn)
    if hidden is None:
        return sig
    return sig.replace(parameters=[p for p in sig.parameters.values() if p.name != hidden])


def _flat_arguments(bound: inspect.BoundArguments) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, value in bound.arguments.items():
        kind = bound.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update(cast(dict[str, object], value))
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            out[name] = value
    return out


def _tool_error_result(exc: AegisError) -> object:
    """The same ``isError`` result aegis-mcp returns; only called with mcp already imported."""
    from aegisd.mcp_results import error_result

    return error_result(exc)


def with_async_authorization(
    action: str,
    *,
    params: ParamsSpec | None = None,
    socket: str | os.PathLike[str] | None = None,
    on_pending: PendingCallback | None = None,
    inject: str | None = "credentials",
    errors: Literal["auto", "raise"] = "auto",
) -> Callable[[Callable[..., Awaitable[_R]]], Callable[..., Awaitable[_R]]]:
    """Decorate an async tool so each call first gets a single-use credential from aegisd.

    On every call the wrapper connects to aegisd, sends ``Authorize(action, params)`` and
    waits, through the phone approval if the policy asks for one, then calls the function
    with the credential. The credential is handed over in two ways:

    * as the keyword argument named by ``inject`` (default ``credentials``) when the function
      declares a parameter of that name; that parameter is removed from the wrapper's
      ``__signature__``, so MCPServer's input schema never shows it;
    * through ``current_credentials()``, a ContextVar set for the duration of the call.

    Once the function returns (or raises) the ContextVar is reset and the wrapper drops its
    references; nothing else keeps the credential. Every call opens its own connection, so
    cancelling the call (an MCP client's cancel, a timeout) withdraws the pending approval.

    Works under asyncio and trio (anyio), on plain async functions and on ``MCPServer``
    tools. When one of the call's arguments is the MCP SDK's ``Context`` (MCPServer passes it
    to a parameter annotated ``Context``), pending approvals are reported as MCP progress
    ("Approve on your phone: <binding message>"), and, with ``errors="auto"``, a refusal is
    returned as an ``isError`` ``CallToolResult`` with ``structuredContent.error.code`` (the
    shape aegis-mcp uses) instead of being raised.

    Args:
        action: the policy action to authorize; it must have ``delivery = "token"`` (proxy
            actions keep their credential inside aegisd: call ``AegisClient.proxy`` instead).
        params: how the tool's arguments become the action's parameters: an argument name or a
            list of them (same names), a mapping ``{action_param: argument_name}``, or a
            callable that receives all arguments (defaults applied) as a read-only mapping and
            returns ``{action_param: value}``. Values are sent as text (``bool`` as
            ``true``/``false``); a ``None`` value is left out. ``None``: no parameters.
        socket: the daemon's socket; default ``AEGIS_SOCKET`` or the platform default.
        on_pending: called with each ``PendingEvent`` (sync or async callable).
        inject: the keyword argument that receives the ``Credentials``; ``None`` to rely on
            ``current_credentials()`` only.
        errors: ``"auto"`` returns an ``isError`` result inside MCP tools and raises
            elsewhere; ``"raise"`` always raises the ``AegisError``.

    Raises:
        TypeError: at decoration time, when the function is not ``async def`` or ``params``
            names an argument the function does not have.
        AegisError: at call time, the subclass for the daemon's refusal (``ApprovalDenied``,
            ``ApprovalExpired``, ``DaemonUnavailable``, …), unless returned as described.
    """

    def decorate(fn: Callable[..., Awaitable[_R]]) -> Callable[..., Awaitable[_R]]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@with_async_authorization needs an async function, not {fn!r}")
        full = inspect.signature(fn)
        hidden = inject if inject is not None and inject in full.parameters else None
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in full.parameters.values())
        unknown = [n for n in _spec_names(params) if n not in full.parameters or n == hidden]
        if unknown and not takes_any:
            raise TypeError(
                f"@with_async_authorization(params=...) names {unknown} but "
                f"{fn.__qualname__} has no such parameter"
            )
        visible = _visible_signature(fn, hidden)

        @functools.wraps(fn)
        async def wrapper(*args: object, **kwargs: object) -> _R:
            bound = visible.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = _flat_arguments(bound)
            ctx = _mcp_context(arguments)
            steps = 0

            async def pending(event: PendingEvent) -> None:
                nonlocal steps
                await _call_back(on_pending, event)
                if ctx is not None:
                    steps += 1
                    with suppress(Exception):  # progress is a courtesy, never fatal
                        await ctx.report_progress(
                            steps, None, f"Approve on your phone: {event.binding_message}"
                        )

            try:
                async with AegisClient(socket) as client:
                    creds: Credentials | None = await client.authorize_params(
                        action, _action_params(params, arguments), on_pending=pending
                    )
            except AegisError as exc:
                if ctx is not None and errors == "auto":
                    return cast(_R, _tool_error_result(exc))
                raise
            token = _CURRENT_CREDENTIALS.set(creds)
            try:
                if hidden is not None:
                    kwargs[hidden] = creds
                return await fn(*args, **kwargs)
            finally:
                _CURRENT_CREDENTIALS.reset(token)
                kwargs.pop(hidden or "", None)
                creds = None  # single use: no reference survives the call

        # MCPServer builds the input schema from __signature__; get_type_hints() (used to find
        # the Context parameter) reads __annotations__ and the wrapped function's globals.
        wrapper.__signature__ = visible  # type: ignore[attr-defined]
        wrapper.__annotations__ = {
            k: v for k, v in getattr(fn, "__annotations__", {}).items() if k != hidden
        }
        return wrapper

    return decorate
