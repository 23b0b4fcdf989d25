"""What names, titles and descriptions may contain (townhall.room.text)."""

from __future__ import annotations

import pytest

from townhall.problems import Unprocessable
from townhall.room.text import MAX_COMBINING_RUN, check_text


@pytest.mark.parametrize("ok", [
    "Ada", "Ada Lovelace", "Zoë", "李小龙", "محمد", "Tiếng Việt", "❤️ fans", "👩‍💻 dev",
    "שָׁלוֹם", "e" + "\u0301" * MAX_COMBINING_RUN, "a\u200bb",
])
def test_ordinary_names_pass(ok: str) -> None:
    assert check_text(ok, "name") == ok


@pytest.mark.parametrize("bad, slug", [
    ("Ada\x00", "control-character"), ("\x1b[31mred", "control-character"),
    ("A\x85B", "control-character"), ("line\nbreak", "control-character"),
    ("a\u2028b", "control-character"), ("\ud800x", "control-character"),
    ("abc\u202eexe.txt", "bidi-control"), ("\u2066x\u2069", "bidi-control"),
    ("\u202a", "bidi-control"),
    ("", "blank-text"), ("   ", "blank-text"), ("\u200b\u200b", "blank-text"),
    ("\u200d\ufeff\u2060", "blank-text"), ("\u3000", "blank-text"), ("\u0301", "blank-text"),
    ("e" + "\u0301" * (MAX_COMBINING_RUN + 1), "combining-marks"),
    ("Z" + "\u0336\u0337\u0338\u0335\u0334" * 4, "combining-marks"),
])
def test_hostile_text_is_refused_precisely(bad: str, slug: str) -> None:
    with pytest.raises(Unprocessable) as refused:
        check_text(bad, "name")
    assert refused.value.instance_slug == slug
    assert refused.value.status == 422


def test_descriptions_may_have_lines_and_be_empty() -> None:
    assert check_text("", "description", multiline=True, allow_empty=True) == ""
    assert check_text("one\n\ttwo", "description", multiline=True) == "one\n\ttwo"
    with pytest.raises(Unprocessable):
        check_text("\n\n", "description", multiline=True, allow_empty=True)
    with pytest.raises(Unprocessable):
        check_text("a\rb", "description", multiline=True)
