"""How file names are written out: shown safely in text for people, carried losslessly for programs.

A Linux file name is bytes. dedupd carries it as a `str` whose bytes that are not UTF-8 are the lone
surrogates U+DC80..U+DCFF (Python's `surrogateescape`, as `os.fsdecode` does); the control protocol and
`--json` keep them so (JSON `"\\udcff"`), and `raw` gives the exact bytes back.

Text output is for a terminal: `shown` writes control characters (newline, tab, ESC and the rest of C0, DEL,
C1), line and paragraph separators, bidirectional overrides and bytes that are not UTF-8 as escapes (`\\n`,
`\\t`, `\\x1b`, `\\xff`, `\\u202e`), so a name cannot move the cursor, recolour the terminal, reorder what is
shown or split a line. Every other character, a backslash included, is printed as is, so ordinary names stay
paths one can copy. Stdlib only: `dedupctl` imports this module and must start fast.
"""

import unicodedata

_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
#: Format characters that reorder the text around them (Trojan Source); other format characters (ZWJ in emoji) stay.
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u061c")


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _needs_escape(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") or char in _BIDI


def shown(text: str) -> str:
    """`text` with what could act on a terminal (or is not UTF-8) escaped; unchanged when nothing does."""
    if text.isprintable():
        return text
    return "".join(_escape(char) if _needs_escape(char) else char for char in text)


def raw(name: str) -> bytes:
    """The file name's bytes, non-UTF-8 bytes included (the inverse of `os.fsdecode` on Linux)."""
    return name.encode("utf-8", "surrogateescape")
