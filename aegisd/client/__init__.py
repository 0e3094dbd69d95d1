"""The Python SDK: ``AegisClient`` and ``@with_async_authorization`` (DESIGN §2).

The public names live here; ``_client`` (the socket client) and ``_decorator`` (the tool
decorator built on it) are private modules, as in httpx. ``import aegisd.client`` loads only
the standard library, anyio, msgspec and Aegis' own wire and error modules.
"""

from __future__ import annotations

from aegisd.client._client import (
    CLIENT_NAME as CLIENT_NAME,
)
from aegisd.client._client import (
    AegisClient as AegisClient,
)
from aegisd.client._client import (
    BlockingAegisClient as BlockingAegisClient,
)
from aegisd.client._client import (
    Credentials as Credentials,
)
from aegisd.client._client import (
    PendingCallback as PendingCallback,
)
from aegisd.client._client import (
    PendingEvent as PendingEvent,
)
from aegisd.client._client import (
    ProxyResult as ProxyResult,
)
from aegisd.client._client import (
    default_socket as default_socket,
)
from aegisd.client._decorator import (
    ParamsSpec as ParamsSpec,
)
from aegisd.client._decorator import (
    current_credentials as current_credentials,
)
from aegisd.client._decorator import (
    with_async_authorization as with_async_authorization,
)
from aegisd.errors import (
    AegisError as AegisError,
)
from aegisd.errors import (
    ApprovalDenied as ApprovalDenied,
)
from aegisd.errors import (
    ApprovalExpired as ApprovalExpired,
)
from aegisd.errors import (
    ApprovalPending as ApprovalPending,
)
from aegisd.errors import (
    ApprovalUnavailable as ApprovalUnavailable,
)
from aegisd.errors import (
    BadRequest as BadRequest,
)
from aegisd.errors import (
    CallerNotAllowed as CallerNotAllowed,
)
from aegisd.errors import (
    Cancelled as Cancelled,
)
from aegisd.errors import (
    CredentialReflected as CredentialReflected,
)
from aegisd.errors import (
    CredentialUnavailable as CredentialUnavailable,
)
from aegisd.errors import (
    DaemonUnavailable as DaemonUnavailable,
)
from aegisd.errors import (
    DaemonUntrusted as DaemonUntrusted,
)
from aegisd.errors import (
    FrameTooLarge as FrameTooLarge,
)
from aegisd.errors import (
    Internal as Internal,
)
from aegisd.errors import (
    InvalidParams as InvalidParams,
)
from aegisd.errors import (
    NotFound as NotFound,
)
from aegisd.errors import (
    PeerRejected as PeerRejected,
)
from aegisd.errors import (
    PolicyDenied as PolicyDenied,
)
from aegisd.errors import (
    RateLimited as RateLimited,
)
from aegisd.errors import (
    ShuttingDown as ShuttingDown,
)
from aegisd.errors import (
    UnknownAction as UnknownAction,
)
from aegisd.errors import (
    UnsupportedProtocol as UnsupportedProtocol,
)
from aegisd.errors import (
    UpstreamError as UpstreamError,
)

__all__ = [
    "CLIENT_NAME",
    "AegisClient",
    "AegisError",
    "ApprovalDenied",
    "ApprovalExpired",
    "ApprovalPending",
    "ApprovalUnavailable",
    "BadRequest",
    "BlockingAegisClient",
    "CallerNotAllowed",
    "Cancelled",
    "CredentialReflected",
    "CredentialUnavailable",
    "Credentials",
    "DaemonUnavailable",
    "DaemonUntrusted",
    "FrameTooLarge",
    "Internal",
    "InvalidParams",
    "NotFound",
    "ParamsSpec",
    "PeerRejected",
    "PendingCallback",
    "PendingEvent",
    "PolicyDenied",
    "ProxyResult",
    "RateLimited",
    "ShuttingDown",
    "UnknownAction",
    "UnsupportedProtocol",
    "UpstreamError",
    "current_credentials",
    "default_socket",
    "with_async_authorization",
]


def _fixup_module_metadata() -> None:
    # as trio does: public names say where they are public (``aegisd.client.AegisClient`` in
    # reprs and tracebacks), not the private module that defines them
    for name in __all__:
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith("aegisd.client._"):
            obj.__module__ = __name__


_fixup_module_metadata()
