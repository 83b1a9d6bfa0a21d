"""The ref parser: every form, round trips of generated names, and clear rejections."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weightstore.errors import InvalidRef
from weightstore.refs import check_name, parse_ref

NAMES = st.from_regex(
    r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,30}(/[A-Za-z0-9_.-]{1,10})?", fullmatch=True
).filter(lambda s: all(seg not in (".", "..") for seg in s.split("/")))


@given(NAMES, st.integers(0, 10**12))
def test_step_refs(task: str, step: int) -> None:
    ref = parse_ref(f"{task}@{step}")
    assert (ref.kind, ref.task, ref.step) == ("step", task, step)


@given(NAMES, NAMES.filter(lambda s: not s.isdigit()))
def test_tag_refs(task: str, tag: str) -> None:
    ref = parse_ref(f"{task}:{tag}")
    assert (ref.kind, ref.task, ref.tag) == ("tag", task, tag)


@given(NAMES)
def test_bare_names_are_latest(task: str) -> None:
    ref = parse_ref(task)
    assert (ref.kind, ref.task) == ("latest", task)
    assert check_name(task) == task


def test_hex_words_may_also_be_id_prefixes() -> None:
    assert parse_ref("3fa9c1").id_prefix == "3fa9c1"
    assert parse_ref("abc").id_prefix is None  # too short to be a prefix
    assert parse_ref("task-1").id_prefix is None


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "@1",
        ":best",
        "a@",
        "a:",
        "a@x",
        "a@1@2",
        "a:b:c",
        "-a",
        "/a",
        "a//b",
        "a/",
        "a b",
        "../etc",
        "a/../b",
        ".",
        "a\n",
        "a\x00",
        "x" * 201,
        "a:12",
    ],
)
def test_invalid_refs_raise_typed_errors(bad: str) -> None:
    with pytest.raises(InvalidRef) as exc:
        parse_ref(bad)
    assert isinstance(exc.value, ValueError)
    assert "ref" in str(exc.value) or "name" in str(exc.value)


@given(st.text(max_size=40))
def test_parser_never_crashes(text: str) -> None:
    try:
        ref = parse_ref(text)
    except InvalidRef:
        return
    assert ref.text == text
