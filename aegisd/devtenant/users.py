"""The tenant's user directory: users, their connected accounts, and provider tokens.

Owns who exists (``login_hint`` checks), each user's connected accounts (the tokens Token
Vault hands out and the Management API shows in ``identities[]``), minting and refreshing of
provider tokens (``gho_…`` style), and the ``users.toml`` text. Wall-clock times are passed in;
this module does no I/O (the server writes the text it renders).
"""

from __future__ import annotations

import secrets
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, final

from aegisd.devtenant.toml_text import toml_key, toml_value

__all__ = ["ConnectedAccount", "ProviderToken", "User", "UserDirectory", "default_users"]

# connection name -> (provider strategy, token prefix, scopes granted when "connecting")
_PROVIDERS: Final = {
    "github": ("github", "gho_", ["repo", "delete_repo", "read:user"]),
    "google-oauth2": (
        "google-oauth2",
        "ya29.",
        ["https://www.googleapis.com/auth/gmail.readonly"],
    ),
}


@dataclass
class ConnectedAccount:
    """One connected account of a user (Auth0 keeps it in ``connected_accounts``)."""

    connection: str
    provider: str
    provider_user_id: int | str  # GitHub's is a number, and the Management API says so
    scopes: list[str]
    access_token: str
    expires_at: float  # wall clock


@dataclass
class User:
    user_id: str
    email: str
    name: str
    accounts: list[ConnectedAccount] = field(default_factory=list)


@dataclass(frozen=True)
class ProviderToken:
    """What the demo API learns from a provider token it was shown."""

    user_id: str
    connection: str
    login: str
    expires_at: float


def _new_provider_token(connection: str) -> str:
    prefix = _PROVIDERS.get(connection, (connection, "tok_", []))[1]
    return prefix + secrets.token_urlsafe(27)


def default_users(user_id: str, email: str, *, now: float, ttl: int) -> list[User]:
    """The demo approver with a GitHub and a Google account already connected."""
    accounts = [
        ConnectedAccount(
            connection=conn,
            provider=provider,
            provider_user_id=5550123 if conn == "github" else "108555012345678901234",
            scopes=list(scopes),
            access_token=_new_provider_token(conn),
            expires_at=now + ttl,
        )
        for conn, (provider, _prefix, scopes) in _PROVIDERS.items()
    ]
    return [User(user_id=user_id, email=email, name="Aegis Demo", accounts=accounts)]


@final
class UserDirectory:
    """All users, and every provider token ever minted (so older ones can be recognised)."""

    def __init__(self, users: list[User]) -> None:
        self._users = {u.user_id: u for u in users}
        self._tokens: dict[str, ProviderToken] = {}
        for user in users:
            for account in user.accounts:
                self._remember(user, account)

    def _remember(self, user: User, account: ConnectedAccount) -> None:
        login = user.user_id.split("|", 1)[-1]
        self._tokens[account.access_token] = ProviderToken(
            user_id=user.user_id,
            connection=account.connection,
            login=login,
            expires_at=account.expires_at,
        )

    def get(self, user_id: str) -> User | None:
        return self._users.get(user_id)

    def __iter__(self) -> Iterator[User]:
        return iter(self._users.values())

    def find_account(
        self, user_id: str, connection: str, login_hint: str | None = None
    ) -> ConnectedAccount | None:
        """The user's account for ``connection`` (``login_hint`` = provider-side user id)."""
        user = self._users.get(user_id)
        if user is None:
            return None
        for account in user.accounts:
            if account.connection != connection:
                continue
            if login_hint is not None and str(account.provider_user_id) != login_hint:
                continue
            return account
        return None

    def fresh_token(self, user_id: str, account: ConnectedAccount, *, now: float, ttl: int) -> bool:
        """Refresh the account's provider token if it has expired, as Token Vault does with
        the stored provider refresh token. Returns whether a new token was minted."""
        if account.expires_at > now:
            return False
        user = self._users[user_id]
        account.access_token = _new_provider_token(account.connection)
        account.expires_at = now + ttl
        self._remember(user, account)
        return True

    def lookup_token(self, token: str) -> ProviderToken | None:
        return self._tokens.get(token)

    def all_tokens(self) -> list[str]:
        return list(self._tokens)

    def to_toml(self) -> str:
        """``users.toml``: user id, email, connected accounts and their provider tokens."""
        lines = ["# Dev tenant users: written by aegisd.devtenant; holds provider tokens.", ""]
        for user in self._users.values():
            lines += ["[[users]]"]
            lines += [
                f"{toml_key(k)} = {toml_value(v)}"
                for k, v in (("user_id", user.user_id), ("email", user.email), ("name", user.name))
            ]
            for a in user.accounts:
                lines += ["", "[[users.accounts]]"]
                lines.append(f"connection = {toml_value(a.connection)}")
                lines.append(f"provider = {toml_value(a.provider)}")
                lines.append(f"provider_user_id = {toml_value(a.provider_user_id)}")
                lines.append(f"scopes = {toml_value(a.scopes)}")
                lines.append(f"access_token = {toml_value(a.access_token)}")
                lines.append(f"expires_at = {toml_value(float(a.expires_at))}")
            lines.append("")
        return "\n".join(lines)

    @classmethod
    def from_toml(cls, text: str) -> UserDirectory:
        """Parse ``users.toml``.

        Raises:
            ValueError: not valid TOML or a required key is missing or mistyped.
        """
        try:
            raw = tomllib.loads(text)
            users = [
                User(
                    user_id=str(u["user_id"]),
                    email=str(u.get("email", "")),
                    name=str(u.get("name", "")),
                    accounts=[
                        ConnectedAccount(
                            connection=str(a["connection"]),
                            provider=str(a.get("provider", a["connection"])),
                            provider_user_id=a["provider_user_id"],
                            scopes=[str(s) for s in a.get("scopes", [])],
                            access_token=str(a["access_token"]),
                            expires_at=float(a["expires_at"]),
                        )
                        for a in u.get("accounts", [])
                    ],
                )
                for u in raw.get("users", [])
            ]
        except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"users.toml is not valid: {exc}") from None
        return cls(users)
