"""``guardian_details``: RAR in the one shape Guardian renders (reference §11)."""

from __future__ import annotations

import json
import re

from hypothesis import given
from hypothesis import strategies as st

from aegisd.auth0.rar import GUARDIAN_TYPE, MAX_PROPERTIES, MAX_VALUE, guardian_details

_NAME = re.compile(r"[a-zA-Z0-9_.-]+")


def _details(**over: object) -> list[dict[str, object]]:
    args: dict[str, object] = {
        "action": "github.delete_repo",
        "binding_message": "Delete repo octo/hello #a1b2c3",
        "caller": "claude-github",
        "exe": "/home/person/.venv/bin/python3.12",
        "pid": 4242,
        "params": {"owner": "octo", "repo": "hello"},
    }
    args.update(over)
    return guardian_details(**args)  # type: ignore[arg-type]


def _props(details: list[dict[str, object]]) -> list[dict[str, object]]:
    props = details[0]["properties"]
    assert isinstance(props, list)
    return props


def test_one_object_with_type_instruction_and_ordered_properties() -> None:
    details = _details()
    assert len(details) == 1
    assert set(details[0]) == {"type", "instruction", "properties"}
    assert details[0]["type"] == GUARDIAN_TYPE
    assert details[0]["instruction"] == "Delete repo octo/hello #a1b2c3"
    props = _props(details)
    assert [(p["name"], p["value"]) for p in props] == [
        ("action", "github.delete_repo"),
        ("caller", "claude-github"),
        ("program", "python3.12"),  # the base name: the full path can name the person
        ("pid", "4242"),
        ("param.owner", "octo"),
        ("param.repo", "hello"),
    ]
    assert [p["display_order"] for p in props] == [1, 2, 3, 4, 5, 6]
    assert all(
        p["display"] is True and set(p) == {"display", "name", "display_order", "value"}
        for p in props
    )


def test_an_unknown_executable_is_named_so() -> None:
    assert _props(_details(exe=""))[2]["value"] == "unknown"


def test_many_parameters_stay_within_ten_properties() -> None:
    params = {f"p{i:02d}": str(i) for i in range(9)}
    props = _props(_details(params=params))
    assert len(props) == MAX_PROPERTIES
    assert [p["name"] for p in props[4:9]] == [f"param.p{i:02d}" for i in range(5)]
    assert props[-1] == {
        "display": True,
        "name": "params.omitted",
        "display_order": 10,
        "value": "p05, p06, p07, p08",
    }


def test_long_values_are_cut_to_255_characters() -> None:
    props = _props(_details(params={"body": "x" * 1000}))
    assert len(props[-1]["value"]) == MAX_VALUE  # type: ignore[arg-type]
    assert str(props[-1]["value"]).endswith("...")


@given(
    params=st.dictionaries(
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True),
        st.text(max_size=400),
        max_size=15,
    ),
    caller=st.text(min_size=1, max_size=300),
)
def test_always_renderable(params: dict[str, str], caller: str) -> None:
    details = _details(params=params, caller=caller)
    props = _props(details)
    assert 1 <= len(props) <= MAX_PROPERTIES
    for p in props:
        assert _NAME.fullmatch(str(p["name"]))
        assert isinstance(p["value"], str) and len(p["value"]) <= MAX_VALUE
    assert len(json.dumps(details).encode()) <= 5 * 1024 * 2  # well within Auth0's size cap
