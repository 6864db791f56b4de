# Ref: Snort 2 users manual §3.5.1 ("content" keyword: |hex| bytes, escaped ; " \ |),
#      A. V. Aho and M. J. Corasick, "Efficient string matching", CACM 18(6), 1975
"""Golden reference of multi-pattern payload matching (the IDS signature matcher).

Signatures are byte strings. A match is every place a signature occurs in the data,
overlapping occurrences and signatures that are suffixes of others included; it is reported as
``(end, signature index)`` where ``end`` is the offset one past the match's last byte. This
module states that meaning by plain search, one signature at a time; the Aho-Corasick
automaton (the GPU kernel's table) must agree with it.

A signature file holds one signature per line; blank lines and lines starting with ``#`` are
skipped. A line is either ``name: content`` or just ``content``; in the content, bytes between
``|`` bars are hexadecimal (``|90 90 ff|``), as in a Snort ``content`` option, and a backslash
escapes ``|`` and ``\\``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

__all__ = ["MAX_SIGNATURE_BYTES", "Signature", "load_signatures", "match", "parse_signature"]

MAX_SIGNATURE_BYTES = 255  # longest content a signature may hold (Snort's content limit is
# larger; a bound keeps the automaton small)


class Signature(NamedTuple):
    """One signature: its name and the bytes it matches."""

    name: str
    content: bytes


def parse_signature(text: str, default_name: str = "") -> Signature:
    """Read one signature line (see the module documentation).

    Raises
    ------
    ValueError
        One sentence saying what is wrong: an empty content, an unclosed ``|``, a bad hex byte,
        a dangling backslash, a content over :data:`MAX_SIGNATURE_BYTES` bytes.
    """
    name, sep, content = text.partition(":")
    if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
        name, content = default_name, text
    name = name.strip()
    content = content.strip()
    out = bytearray()
    pos = 0
    while pos < len(content):
        char = content[pos]
        if char == "\\":
            if pos + 1 == len(content):
                raise ValueError("a backslash ends the content; escape it as \\\\")
            out += content[pos + 1].encode()
            pos += 2
        elif char == "|":
            end = content.find("|", pos + 1)
            if end < 0:
                raise ValueError("a '|' hex section is not closed")
            digits = content[pos + 1:end].replace(" ", "")
            try:
                out += bytes.fromhex(digits)
            except ValueError:
                raise ValueError(f"|{content[pos + 1:end]}| is not hexadecimal bytes") from None
            pos = end + 1
        else:
            out += char.encode()
            pos += 1
    if not out:
        raise ValueError("the content is empty")
    if len(out) > MAX_SIGNATURE_BYTES:
        raise ValueError(f"the content is {len(out)} bytes, more than {MAX_SIGNATURE_BYTES}")
    return Signature(name, bytes(out))


def load_signatures(path) -> list[Signature]:
    """Read a signature file.

    Raises
    ------
    ValueError
        One sentence naming the file and line when it cannot be read or a line is bad, or when
        it holds no signature.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the signature file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: the signature file is not UTF-8 text") from None
    signatures = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            signatures.append(parse_signature(line, default_name=f"sig{len(signatures)}"))
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None
    if not signatures:
        raise ValueError(f"{path}: no signature in the file (one per line, '#' comments)")
    return signatures


def match(patterns, data) -> list[tuple[int, int]]:
    """Return every occurrence of every pattern in ``data``.

    Parameters
    ----------
    patterns : sequence of bytes
        Non-empty byte strings; index ``i`` is pattern ``i``.
    data : bytes-like

    Returns
    -------
    list of (int, int)
        ``(end, pattern index)`` sorted by ``end`` then index; ``end`` is one past the last
        byte of the occurrence.
    """
    data = bytes(data)
    found = []
    for index, pattern in enumerate(patterns):
        pattern = bytes(pattern)
        if not pattern:
            raise ValueError(f"pattern {index} is empty")
        start = data.find(pattern)
        while start >= 0:
            found.append((start + len(pattern), index))
            start = data.find(pattern, start + 1)
    found.sort()
    return found
