"""What every reader of raw files yields and counts: a document's text with where it came from,
and the tally of the records reading ran into (good, malformed, skipped, repaired)."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

MAX_MALFORMED_EXAMPLES = 20


@dataclass(frozen=True)
class RawDocument:
    """One document's raw text and where it came from.

    location: `name` (whole file), `name:LINE` (JSON line, 1-based), `name[INDEX]` (JSON array
    element or Parquet row, 0-based), `name#N` (N-th document of a split text file, 1-based),
    `name#Title` (Wikipedia page).
    """

    text: str
    location: str


@dataclass
class ReadTally:
    """What reading one file ran into; tallies of many files are merged into one."""

    records: int = 0
    """Records seen, good or bad (JSON lines and elements, Parquet rows, documents, wiki pages)."""
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    """The first MAX_MALFORMED_EXAMPLES malformed records, as `location: reason`."""
    replaced_chars: int = 0
    """Undecodable UTF-8 sequences replaced with U+FFFD."""
    skipped: collections.Counter[str] = field(default_factory=collections.Counter)
    """Well-formed records left out on purpose, by reason (wiki "redirect", "namespace", ...)."""

    def add_malformed(self, location: str, reason: str) -> None:
        self.malformed += 1
        if len(self.malformed_examples) < MAX_MALFORMED_EXAMPLES:
            self.malformed_examples.append(f"{location}: {reason}")

    def merge(self, other: ReadTally) -> None:
        self.records += other.records
        self.malformed += other.malformed
        room = MAX_MALFORMED_EXAMPLES - len(self.malformed_examples)
        self.malformed_examples.extend(other.malformed_examples[: max(room, 0)])
        self.replaced_chars += other.replaced_chars
        self.skipped.update(other.skipped)
