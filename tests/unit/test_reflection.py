"""The credential scan: every plausible echo of a token is found, innocent answers are not."""

from __future__ import annotations

import base64
import json
import os
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aegisd.daemon.reflection import CredentialScan

# an opaque token with every character that encodings treat specially
TOKEN = "gho_Ab+c/d=Ef-g_h.i~J" + "k" * 20
HEADER = "Bearer " + TOKEN
SCAN = CredentialScan.for_credential(TOKEN)


@pytest.mark.parametrize(
    ("text", "form"),
    [
        (f"echo {TOKEN}", "raw"),
        (json.dumps({"auth": HEADER}), "raw"),
        (json.dumps({"auth": HEADER}).replace("/", "\\/"), "JSON-escaped raw"),
        (json.dumps({"auth": HEADER}, ensure_ascii=True).replace("+", "\\u002B"), "JSON"),
        ("q=" + quote(HEADER, safe=""), "percent-encoded raw"),
        ("q=" + quote(HEADER, safe="").lower(), None),  # case-folded: the token is gone
        ("q=" + quote(quote(HEADER, safe=""), safe=""), "percent-encoded raw"),
        ("q=" + "".join(f"%{b:02x}" for b in HEADER.encode()), "percent-encoded"),
        (HEADER.encode().hex(), "hex"),
        (base64.b64encode(HEADER.encode()).decode(), "base64"),
        (base64.b64encode(b"a" + HEADER.encode()).decode(), "base64"),
        (base64.b64encode(b"ab" + HEADER.encode()).decode().rstrip("="), "base64"),
        (base64.urlsafe_b64encode(b"Authorization: " + HEADER.encode()).decode(), "base64url"),
        (json.dumps({"b": base64.b64encode(HEADER.encode()).decode()}).replace("/", "\\/"), ""),
        ("q=" + quote(base64.b64encode(b"x" + HEADER.encode()).decode(), safe=""), ""),
    ],
)
def test_finds_the_token_however_it_is_echoed(text: str, form: str | None) -> None:
    found = SCAN.find(text.encode())
    if form is None:
        assert found is None
    else:
        assert found is not None and form in found


def test_headers_are_searched_by_name_and_value() -> None:
    assert SCAN.find_in_headers({"content-type": "json", "x-debug": HEADER}) == ("x-debug", "raw")
    assert SCAN.find_in_headers({"content-type": "application/json"}) is None


def test_the_form_never_contains_the_token() -> None:
    assert TOKEN not in repr(SCAN.find(TOKEN.encode()))


@settings(max_examples=200, deadline=None)
@given(noise=st.binary(max_size=4096))
def test_random_answers_without_the_token_pass(noise: bytes) -> None:
    token = base64.urlsafe_b64encode(os.urandom(30)).decode()
    assert CredentialScan.for_credential(token).find(noise) is None


def test_a_scan_never_shows_its_token() -> None:
    assert TOKEN not in repr(SCAN) and TOKEN not in str(SCAN)
    assert TOKEN.encode().hex() not in repr(SCAN)
