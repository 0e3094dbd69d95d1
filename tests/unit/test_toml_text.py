"""``aegisd.toml_text.dumps``: what it writes, ``tomllib`` reads back unchanged."""

from __future__ import annotations

import tomllib

from hypothesis import given, settings
from hypothesis import strategies as st

from aegisd.toml_text import dumps


def test_toml_text_round_trips_a_config_like_document() -> None:
    keys = st.text(min_size=1, max_size=8)
    scalars = st.one_of(
        st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
    )
    values = st.recursive(
        scalars | st.lists(scalars, max_size=3),
        lambda inner: (
            st.dictionaries(keys, inner, max_size=3)
            | st.lists(st.dictionaries(keys, inner, min_size=1, max_size=3), min_size=1, max_size=2)
        ),
        max_leaves=12,
    )

    @settings(max_examples=100, deadline=None)
    @given(st.dictionaries(keys, values, max_size=4))
    def check(doc: dict[str, object]) -> None:
        assert tomllib.loads(dumps(doc)) == doc

    check()
