"""Issue 13 finding 1: an API that echoes the request cannot hand the agent the credential.

The stack is real (SDK → socket → daemon → dev tenant over HTTP for the approval and the
token); the API is a hostile loopback server that writes the ``Authorization`` header it got
back into its answer, in the forms echo endpoints, error pages and request dumps use. The
daemon must withhold every such answer whole, say ``credential_reflected`` and audit it with
the token's fingerprint only, while an honest answer still comes through.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import pytest
import trio

from aegisd.auth0.tokens import token_fingerprint
from aegisd.client import AegisClient, CredentialReflected, UpstreamError

from .conftest import Stack, wait_for_pending

T = 20


def _answers(auth: str) -> dict[str, tuple[dict[str, str], bytes]]:
    """mode -> (extra headers, body) an echoing API would send for this Authorization."""
    dump = f"GET /echo HTTP/1.1\r\nHost: api\r\nAuthorization: {auth}\r\n\r\n".encode()
    return {
        "clean": ({}, b'{"ok": true}'),
        "json-echo": ({}, json.dumps({"headers": {"Authorization": auth}}).encode()),
        "json-escaped": (
            {},
            json.dumps({"h": auth}).replace("/", "\\/").replace("-", "\\u002d").encode(),
        ),
        "header": ({"x-echo": auth}, b"{}"),
        # the token straddles the 1,024-byte cut of returned header values
        "long-header": ({"x-echo": "p" * 1010 + auth}, b"{}"),
        "dump-base64": ({}, b"request=" + base64.b64encode(b"x" + dump)),
        "dump-base64url": ({}, base64.urlsafe_b64encode(b"xy" + dump).rstrip(b"=")),
        "percent": (
            {},
            b"next=https://api/?h="
            + re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), quote(auth, safe="")).encode(),
        ),
        "error-page": ({}, b"<pre>" + b"x" * 50_000 + auth.split(" ", 1)[1].encode() + b"</pre>"),
    }


class EchoApi:
    def __init__(self) -> None:
        self.hits: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                mode = self.path.rsplit("/", 1)[-1]
                api.hits.append(mode)
                extra, body = _answers(self.headers.get("authorization", ""))[mode]
                self.send_response(200)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def echo_api() -> Iterator[EchoApi]:
    api = EchoApi()
    yield api
    api.close()


def with_echo_action(port: int) -> Callable[[str], str]:
    def edit(text: str) -> str:
        return (
            text
            + f"""
[actions."demo.echo"]
description = "An API that echoes the request"
approval = "ciba"
binding_message = "Echo test"
params = {{ mode = "^[a-z0-9-]{{1,20}}$" }}
credential = {{ kind = "ciba_token" }}
remember = {{ scope = "action", ttl = 60 }}
request = {{ url = "http://127.0.0.1:{port}/echo/{{mode}}", response_headers = ["x-echo"] }}
"""
        )

    return edit


REFLECTING = [
    "json-echo",
    "json-escaped",
    "header",
    "long-header",
    "dump-base64",
    "dump-base64url",
    "percent",
    "error-page",
]


async def test_an_answer_that_carries_the_credential_is_withheld_whole(
    make_stack: Callable[..., object], echo_api: EchoApi
) -> None:
    stack: Stack = await make_stack(edit=with_echo_action(echo_api.port))  # type: ignore[misc]

    async def approve() -> None:
        ids = await wait_for_pending(stack.tenant)
        stack.tenant.approve(ids[0])

    with trio.fail_after(T):
        async with trio.open_nursery() as n, AegisClient(stack.socket) as c:
            n.start_soon(approve)
            clean = await c.proxy("demo.echo", mode="clean")  # one approval, then remembered
            assert clean.status == 200 and json.loads(clean.body) == {"ok": True}
            for mode in REFLECTING:
                with pytest.raises(CredentialReflected) as info:
                    await c.proxy("demo.echo", mode=mode)
                assert isinstance(info.value, UpstreamError)  # old handlers still catch it
                assert info.value.code == "credential_reflected"
                assert info.value.exit_code == 15
    assert echo_api.hits == ["clean", *REFLECTING]  # each request was made once
    (credential,) = stack.audit_records("credential")[:1]
    reflected = stack.audit_records("credential_reflected")
    assert [r["found_in"] for r in reflected] == [
        "header x-echo" if "header" in m else "body" for m in REFLECTING
    ]
    assert {r["fingerprint"] for r in reflected} == {credential["fingerprint"]}
    refused = stack.audit_records("refused")
    assert [r["code"] for r in refused] == ["credential_reflected"] * len(REFLECTING)
    # the token itself is nowhere in the audit trail
    fp = credential["fingerprint"]
    (token,) = [t for t in stack.tenant.issued_secrets() if token_fingerprint(t) == fp]
    assert token not in stack.config.audit_path().read_text()
