"""The demo resource server under ``/demo-api/``: a tiny GitHub stand-in for the demo and tests.

Owns what the downstream API accepts: only unexpired provider tokens that this tenant's Token
Vault (or Management API) handed out for the demo connection (``github`` by default); anything
else is 401 ``Bad credentials`` as GitHub answers. It echoes what was done so a caller can show
a real downstream effect, and offers a redirect so proxy tests can check redirects are not
followed. It must not log tokens.
"""

from __future__ import annotations

import json
from typing import final

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from aegisd.devtenant.tenant import Tenant
from aegisd.devtenant.users import ProviderToken

__all__ = ["DemoApi"]


def _bad_credentials() -> JSONResponse:
    return JSONResponse(
        {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="demo-api"'},
    )


def _not_found() -> JSONResponse:
    return JSONResponse({"message": "Not Found"}, status_code=404)


@final
class DemoApi:
    """Demo API endpoints bound to one tenant."""

    def __init__(self, tenant: Tenant) -> None:
        self._t = tenant
        self._issues = 0

    def routes(self) -> list[Route]:
        return [
            Route("/demo-api/repos", self.list_repos, methods=["GET"]),
            Route("/demo-api/repos/{repo}", self.delete_repo, methods=["DELETE"]),
            Route("/demo-api/repos/{repo}/issues", self.create_issue, methods=["POST"]),
            Route("/demo-api/user", self.whoami, methods=["GET"]),
            Route("/demo-api/redirect", self.redirect, methods=["GET"]),
            Route("/demo-api/redirected", self.redirected, methods=["GET"]),
        ]

    def _caller(self, request: Request) -> ProviderToken | None:
        t = self._t
        t.stats.demo_api_calls += 1
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() != "bearer ":
            return None
        found = t.users.lookup_token(auth[7:].strip())
        if found is None or found.connection != t.options.demo_api_connection:
            return None
        if found.expires_at <= t.wall():
            return None
        return found

    async def list_repos(self, request: Request) -> Response:
        self._t.stats.demo_api_calls += 1
        return JSONResponse(
            [{"name": name, "full_name": f"aegis-demo/{name}"} for name in self._t.repos]
        )

    async def delete_repo(self, request: Request) -> Response:
        caller = self._caller(request)
        if caller is None:
            return _bad_credentials()
        repo = request.path_params["repo"]
        if repo not in self._t.repos:
            return _not_found()
        self._t.repos.remove(repo)
        return JSONResponse({"deleted": repo, "by": caller.user_id})

    async def create_issue(self, request: Request) -> Response:
        caller = self._caller(request)
        if caller is None:
            return _bad_credentials()
        repo = request.path_params["repo"]
        if repo not in self._t.repos:
            return _not_found()
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("title"), str):
            return JSONResponse(
                {"message": "Invalid request: a JSON object with a string title is required"},
                status_code=422,
            )
        self._issues += 1
        return JSONResponse(
            {
                "number": self._issues,
                "repo": repo,
                "title": body["title"],
                "body": body.get("body") if isinstance(body.get("body"), str) else None,
                "by": caller.user_id,
            },
            status_code=201,
        )

    async def whoami(self, request: Request) -> Response:
        caller = self._caller(request)
        if caller is None:
            return _bad_credentials()
        return JSONResponse({"login": caller.login, "user_id": caller.user_id})

    async def redirect(self, request: Request) -> Response:
        self._t.stats.demo_api_calls += 1
        return RedirectResponse(self._t.issuer + "demo-api/redirected", status_code=302)

    async def redirected(self, request: Request) -> Response:
        self._t.stats.demo_redirect_followed += 1
        return JSONResponse({"followed": True})
