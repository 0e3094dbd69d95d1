"""Binding messages: what the person reads on the phone, and the load-time template checks."""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aegisd.binding import (
    MAX_BINDING_MESSAGE,
    is_valid_binding_message,
    pattern_max_length,
    reduce_text,
    render_binding_message,
    template_problems,
    template_warnings,
)

DIGEST = hashlib.sha256(b"request").hexdigest()
SUFFIX = "#" + DIGEST[:6]
AUTH0_ALPHABET = re.compile(r"[A-Za-z0-9 +\-_.,:#]{1,64}")


def test_fills_placeholders_and_ends_with_digest() -> None:
    msg = render_binding_message(
        "Delete repo {owner}/{repo}", {"owner": "octo-org", "repo": "hello.world"}, DIGEST
    )
    assert msg == f"Delete repo octo-org:hello.world {SUFFIX}"


def test_disallowed_characters_are_replaced_and_spaces_collapsed() -> None:
    msg = render_binding_message(
        "Pay {amount}   to {who}!", {"amount": "$25", "who": "Zoë"}, DIGEST
    )
    assert msg == f"Pay 25 to Zoe {SUFFIX}"
    assert AUTH0_ALPHABET.fullmatch(msg)


def test_newlines_and_emoji_from_parameters_cannot_break_the_message() -> None:
    msg = render_binding_message("Send {text}", {"text": "hi\n\tthere 🚀 <b>"}, DIGEST)
    assert msg == f"Send hi there b {SUFFIX}"


def test_a_parameter_cannot_fake_a_digest() -> None:
    msg = render_binding_message("Delete {repo}", {"repo": "x #000000"}, DIGEST)
    assert msg.count("#") == 1
    assert msg.endswith(SUFFIX)


def test_fixed_text_may_use_hash() -> None:
    msg = render_binding_message("Close issue #{n}", {"n": "42"}, DIGEST)
    assert msg == f"Close issue #42 {SUFFIX}"


def test_long_value_is_shortened_in_the_middle_and_digest_kept() -> None:
    msg = render_binding_message("Delete {repo}", {"repo": "a" * 100 + "z" * 100}, DIGEST)
    assert len(msg) == MAX_BINDING_MESSAGE
    assert msg.endswith("zzz " + SUFFIX)
    assert msg.startswith("Delete aaaa") and ".." in msg


def test_the_shipped_github_example_tells_two_long_repos_apart() -> None:
    # issue 13 finding 2: both used to read
    # "DELETE repo acme-platform-engineering:infrastructure-t.."
    template = "DELETE repo {owner}/{repo}"
    owner = "acme-platform-engineering"
    prod = render_binding_message(
        template, {"owner": owner, "repo": "infrastructure-terraform-production"}, DIGEST
    )
    play = render_binding_message(
        template, {"owner": owner, "repo": "infrastructure-terraform-playground"}, DIGEST
    )
    assert prod == f"DELETE repo acme-plat..ngineering:infrastruc..production {SUFFIX}"
    assert play == f"DELETE repo acme-plat..ngineering:infrastruc..playground {SUFFIX}"
    assert is_valid_binding_message(prod) and is_valid_binding_message(play)


def test_short_values_stay_whole_and_the_long_one_takes_the_rest() -> None:
    msg = render_binding_message(
        "Move {a} from {b} to {c}", {"a": "x" * 80, "b": "src", "c": "dst"}, DIGEST
    )
    assert " from src to dst " in msg and len(msg) == MAX_BINDING_MESSAGE
    assert re.search(r"Move x+\.\.x+ from", msg)


def test_pattern_max_length() -> None:
    assert pattern_max_length("^[A-Za-z0-9-]{1,39}$") == 39
    assert pattern_max_length("^(?:ab|cde)$") == 3
    assert pattern_max_length("^[a-z]+$") is None
    assert pattern_max_length("^.{1,5000}$") is None  # longer than any value may be


def test_warns_when_the_longest_values_would_be_shortened() -> None:
    patterns = {"owner": "^[A-Za-z0-9-]{1,39}$", "repo": "^[A-Za-z0-9._-]{1,100}$"}
    (warning,) = template_warnings("DELETE repo {owner}/{repo}", patterns)
    assert "the message is 152 characters where 56 fit" in warning
    assert "{owner} (up to 39) to 21" in warning and "{repo} (up to 100) to 22" in warning
    assert template_problems("DELETE repo {owner}/{repo}", list(patterns), patterns) == []
    assert template_warnings("Delete {repo}", {"repo": "^[a-z]{1,40}$"}) == []
    assert "unbounded" in template_warnings("Delete {repo}", {"repo": "^[a-z]+$"})[0]


def test_refuses_a_template_that_leaves_a_parameter_unreadable() -> None:
    names = "abcdefgh"
    template = "Do " + " ".join("{" + n + "}" for n in names)
    patterns = dict.fromkeys(names, "^[a-z]{1,30}$")
    problems = template_problems(template, list(names), patterns)
    assert any("fewer than 8" in p for p in problems)
    # short patterns make the same template fine
    assert template_problems(template, list(names), dict.fromkeys(names, "^[a-z]{1,4}$")) == []


def test_digest_prefix_and_case_are_accepted() -> None:
    msg = render_binding_message("Go", {}, "sha256:" + DIGEST.upper())
    assert msg == f"Go {SUFFIX}"


def test_short_digest_is_refused() -> None:
    with pytest.raises(ValueError):
        render_binding_message("Go", {}, "abc")


def test_unknown_placeholder_at_render_time_is_refused() -> None:
    with pytest.raises(ValueError):
        render_binding_message("Delete {repo}", {}, DIGEST)


def test_literal_braces() -> None:
    msg = render_binding_message("Set {{flag}} {v}", {"v": "on"}, DIGEST)
    assert msg == f"Set flag on {SUFFIX}"


def test_reduce_text_examples() -> None:
    assert reduce_text("  a/b & c=d; don't  ") == "a:b + c:d, dont"
    assert reduce_text("#x", allow_hash=False) == "x"


@settings(max_examples=300, deadline=None)
@given(
    template=st.text(max_size=80).map(lambda t: t.replace("{", "").replace("}", "")),
    value=st.text(max_size=200),
    digest=st.binary(min_size=1, max_size=16).map(lambda b: hashlib.sha256(b).hexdigest()),
)
def test_any_input_gives_a_valid_message_ending_with_its_digest(
    template: str, value: str, digest: str
) -> None:
    msg = render_binding_message(template + "{p}", {"p": value}, digest)
    assert is_valid_binding_message(msg)
    assert len(msg) <= MAX_BINDING_MESSAGE
    assert msg.endswith("#" + digest[:6])
    if "#" not in reduce_text(template):
        assert msg.count("#") == 1  # the value cannot add one


def test_is_valid_binding_message() -> None:
    assert is_valid_binding_message("Confirm payment of 2500 #ab12cd")
    assert not is_valid_binding_message("")
    assert not is_valid_binding_message("x" * 65)
    assert not is_valid_binding_message("Pay $5")


# ---- template_problems ----------------------------------------------------------------------


def test_good_template_has_no_problems() -> None:
    assert (
        template_problems(
            "Delete repo {owner}/{repo}",
            ["owner", "repo"],
            {"owner": "^[A-Za-z0-9-]{1,39}$", "repo": "^[A-Za-z0-9._-]{1,100}$"},
        )
        == []
    )


def test_unknown_placeholder_is_a_problem() -> None:
    problems = template_problems("Delete {repository}", ["repo"], {"repo": "^.+$"})
    assert len(problems) == 1 and "{repository}" in problems[0]


@pytest.mark.parametrize(
    "template", ["Delete {repo!r}", "Delete {repo:>10}", "Delete {repo.x}", "{}"]
)
def test_non_plain_placeholders_are_problems(template: str) -> None:
    assert template_problems(template, ["repo"], {"repo": "^.+$"})


def test_malformed_braces_are_a_problem() -> None:
    assert template_problems("Delete {repo", ["repo"], {"repo": "^.+$"})


def test_fixed_text_that_cannot_fit_with_digest_is_a_problem() -> None:
    room = MAX_BINDING_MESSAGE - len(" #") - 6
    assert template_problems("x" * room, [], {}) == []
    problems = template_problems("x" * (room + 1) + " {repo}", ["repo"], {"repo": "^.+$"})
    assert any("fixed text" in p for p in problems)


def test_fixed_text_length_counts_after_reduction() -> None:
    # 60 emoji reduce to nothing: the template fits
    assert not any("fixed text" in p for p in template_problems("🚀" * 60 + "Go", [], {}))


def test_parameter_that_may_be_empty_is_a_problem() -> None:
    problems = template_problems("Delete {repo}", ["repo"], {"repo": "^[a-z]*$"})
    assert any("may be empty" in p for p in problems)
