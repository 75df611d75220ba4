"""Text cleaning and sentence segmentation: raw document text in, clean sentences out.

Pure functions on strings; reading files lives in `formats`, the stage that drives both in `ingest`.
"""

from __future__ import annotations

import ctypes
import re
import threading
import unicodedata
from dataclasses import dataclass

import blingfire

# Line breaks as `str.splitlines` knows them, incl. the Unicode line/paragraph separators.
_LINE_BREAKS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
# Invisible characters that would otherwise split or glue words unpredictably.
_INVISIBLE = "\ufeff\u200b\u00ad"


def _translation_table() -> dict[int, str | None]:
    """Map every control character to nothing, line breaks to "\\n", other spaces to " "."""
    table: dict[int, str | None] = {}
    # Every Cc, Zs and Cs code point lies in the BMP (tests check this against the whole range).
    for code in range(0x10000):
        category = unicodedata.category(chr(code))
        if category == "Cc":
            table[code] = None
        elif category == "Zs":
            table[code] = " "
        elif category == "Cs":  # a lone surrogate (JSON can escape one) is no text: mark it
            table[code] = "\ufffd"
    table[ord("\t")] = " "
    table[ord(" ")] = " "
    table.pop(ord("\n"))
    table.update({ord(c): "\n" for c in _LINE_BREAKS})
    table.update({ord(c): None for c in _INVISIBLE})
    return table


_TABLE = _translation_table()
# str.translate alone runs at ~15 MB/s on non-ASCII text; applying it to matches of this class only
# leaves ordinary text untouched at regex-scan speed.
_SPECIAL = re.compile(
    "[" + "".join(re.escape(chr(code)) for code in sorted(_TABLE) if code != ord(" ")) + "]+"
)
_SPACE_RUN = re.compile(r" {2,}")
_BLANK_LINES = re.compile(r"\n{3,}")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_NON_SPACE = re.compile(r"\S")


def normalize_text(text: str) -> str:
    """NFC, no control or invisible characters, single spaces, paragraphs split by one blank line.

    Lines are stripped at both ends and leading/trailing blank lines removed; a single newline stays
    (hard-wrapped prose), two or more become exactly one blank line.
    """
    text = text.replace("\r\n", "\n")
    # Every character _SPECIAL matches is unprintable, and isprintable() runs far faster than a
    # regex scan, so clean text (most text) skips the scans it does not need.
    if not text.replace("\n", "").isprintable():
        text = _SPECIAL.sub(lambda match: match.group().translate(_TABLE), text)
    # Composed after the removals: a soft hyphen may sit between a letter and its accent.
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if "  " in text:
        text = _SPACE_RUN.sub(" ", text)
    # After the collapse a line has at most one space at each end.
    text = text.replace(" \n", "\n").replace("\n ", "\n")
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip("\n ")


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs of normalised text; the single newlines of hard-wrapped prose become spaces."""
    paragraphs = (p.replace("\n", " ").strip() for p in _PARAGRAPH_BREAK.split(text))
    return [p for p in paragraphs if p]


_CLOSERS = "」』”’）》"
# A terminator run or closing quote that blingfire put at the start of the next piece.
_LEADING_TAIL = re.compile(f"^[。！？{_CLOSERS}]+")
_CJK_END = re.compile(f"[。！？]+[{_CLOSERS}]*")
# Blingfire makes a lone "Mr." a sentence when it starts a sentence after another one.
_TITLES = frozenset(
    {
        "Mr.",
        "Mrs.",
        "Ms.",
        "Dr.",
        "Prof.",
        "St.",
        "Mt.",
        "Jr.",
        "Sr.",
        "Gen.",
        "Sen.",
        "Rep.",
        "Gov.",
        "Lt.",
        "Col.",
        "Capt.",
        "Rev.",
        "Hon.",
        "Sgt.",
    }
)


def _reattach(pieces: list[str]) -> list[str]:
    """Undo blingfire's wrong splits: a title abbreviation standing alone joins the next piece; a
    leading terminator or closing quote goes back to the sentence it ends; a piece starting in
    lower case continues the one before (blingfire splits `"Stop!" he said.` after the quote)."""
    # Each sentence as the list of its parts, joined once at the end: appending to a growing
    # string would copy it at every join, quadratic in a paragraph of many short pieces.
    out: list[list[str]] = []
    for piece in pieces:
        if out and len(out[-1]) == 1 and out[-1][0] in _TITLES:
            out[-1].append(" " + piece)
            continue
        tail = _LEADING_TAIL.match(piece)
        if tail and out:
            out[-1].append(tail.group())
            piece = piece[tail.end() :].lstrip()
        if out and piece[:1].islower():
            out[-1].append(" " + piece)
        elif piece:
            out.append([piece])
    return ["".join(parts) for parts in out]


def _split_cjk(sentence: str) -> list[str]:
    """Split after each run of 。！？ (with the closing quotes that follow it)."""
    pieces, start = [], 0
    for end in _CJK_END.finditer(sentence):
        pieces.append(sentence[start : end.end()])
        start = end.end()
    pieces.append(sentence[start:])
    return pieces


class _Blingfire(threading.local):
    """blingfire's TextToSentences with an output buffer reused across calls. Its own wrapper
    allocates and zeroes a fresh buffer of twice the input per call, which cost more than the
    segmentation itself on paragraph-sized inputs."""

    def __init__(self) -> None:
        self.buffer = ctypes.create_string_buffer(1 << 16)

    def sentences(self, text: str) -> str:
        data = text.encode()
        if len(self.buffer) < 2 * len(data) + 1:
            self.buffer = ctypes.create_string_buffer(2 * len(data) + 1)
        n = blingfire.blingfire.TextToSentences(data, len(data), self.buffer, len(self.buffer))
        if n < 0 or n > len(self.buffer):
            raise RuntimeError(f"blingfire could not segment a text of {len(data)} bytes")
        return self.buffer.raw[:n].rstrip(b"\0").decode()


_BLINGFIRE = _Blingfire()


def _has_cjk_terminator(text: str) -> bool:
    # Substring tests run at memory speed; a regex search over every paragraph did not.
    return "。" in text or "！" in text or "？" in text


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of one paragraph: blingfire, repaired at quotes, then split at CJK terminators."""
    pieces = _reattach([p.strip() for p in _BLINGFIRE.sentences(paragraph).split("\n")])
    if not _has_cjk_terminator(paragraph):  # the common case, spared a regex pass per sentence
        return pieces
    sentences = (s.strip() for piece in pieces for s in _split_cjk(piece))
    return [s for s in sentences if s]


@dataclass(frozen=True)
class SentenceLimits:
    """Bounds on sentence length, in characters."""

    min_chars: int
    """Shorter sentences are dropped (headers, list bullets, page numbers)."""
    max_chars: int
    """Longer sentences (run-on lists, tables flattened to text) are cut at whitespace."""

    def __post_init__(self) -> None:
        if self.min_chars < 0:
            raise ValueError(f"min_chars must be >= 0, got {self.min_chars}")
        if self.max_chars < max(self.min_chars, 1):
            raise ValueError(
                f"max_chars must be >= 1 and >= min_chars ({self.min_chars}), got {self.max_chars}"
            )


def cut_long(sentence: str, max_chars: int) -> list[str]:
    """Pieces of at most max_chars, cut at the last space that fits, else hard (CJK has none).

    Linear in the sentence: it walks an offset and copies each piece once (slicing off the rest
    at every cut made a sentence with no spaces quadratic)."""
    pieces = []
    start, end = 0, len(sentence)
    while end - start > max_chars:
        cut = sentence.rfind(" ", start, start + max_chars + 1)
        if cut <= start:
            cut = start + max_chars
        pieces.append(sentence[start:cut].rstrip())
        text = _NON_SPACE.search(sentence, cut)
        start = text.start() if text else end
    if start < end:
        pieces.append(sentence[start:])
    return pieces


def document_sentences(text: str, limits: SentenceLimits) -> tuple[list[str], int, int]:
    """(sentences, n_dropped_short, n_split_long) of one raw document.

    Pieces of a cut sentence are kept whatever their length: they are real text, only split.
    """
    sentences: list[str] = []
    n_short = n_long = 0
    for paragraph in split_paragraphs(normalize_text(text)):
        for sentence in split_sentences(paragraph):
            if len(sentence) < limits.min_chars:
                n_short += 1
            elif len(sentence) > limits.max_chars:
                n_long += 1
                sentences.extend(cut_long(sentence, limits.max_chars))
            else:
                sentences.append(sentence)
    return sentences, n_short, n_long
