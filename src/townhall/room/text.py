"""What a display name, title or description may contain, with no I/O.

People read these in other people's browsers, terminals and logs: control characters
(a NUL ends a C string, an ESC drives a terminal), bidi overrides (they reorder what
follows, to disguise a name or a link), text that is only invisible characters, and towers
of combining marks ("zalgo") are refused with a precise 422 rather than shown.
"""

from __future__ import annotations

import unicodedata

from townhall.problems import Unprocessable

# Explicit bidi embeddings/overrides (U+202A-202E) and isolates (U+2066-2069).
BIDI_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))
# Enough for real scripts (Vietnamese, Hebrew points with cantillation, Indic vowel signs
# with a nukta and a virama), too few for a tower over the next line.
MAX_COMBINING_RUN = 4
_INVISIBLE = ("Zs", "Zl", "Zp", "Cf", "Mn", "Me")


def check_text(value: str, what: str, *, multiline: bool = False,
               allow_empty: bool = False) -> str:
    """``value`` if people may be shown it as ``what``; otherwise a 422 whose slug says why.
    ``multiline`` lets line feeds and tabs through (descriptions)."""
    run = 0
    for ch in value:
        cat = unicodedata.category(ch)
        if ch in BIDI_CONTROLS:
            raise Unprocessable(f"the {what} contains a bidi override or isolate "
                                f"(U+{ord(ch):04X})", slug="bidi-control")
        if multiline and ch in "\n\t":
            run = 0
            continue
        if cat in ("Cc", "Cs", "Zl", "Zp"):
            raise Unprocessable(f"the {what} contains a control character (U+{ord(ch):04X})",
                                slug="control-character")
        if cat in ("Mn", "Me"):
            run += 1
            if run > MAX_COMBINING_RUN:
                raise Unprocessable(f"the {what} stacks more than {MAX_COMBINING_RUN} "
                                    "combining marks on one character",
                                    slug="combining-marks")
        else:
            run = 0
    if not value and allow_empty:
        return value
    if all(ch.isspace() or unicodedata.category(ch) in _INVISIBLE for ch in value):
        raise Unprocessable(f"the {what} has nothing visible in it", slug="blank-text")
    return value
