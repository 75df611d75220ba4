"""Cleaning and sentence segmentation: bertflow.pipeline.ingest.clean."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from bertflow.pipeline.ingest.clean import (
    SentenceLimits,
    cut_long,
    document_sentences,
    normalize_text,
    split_paragraphs,
    split_sentences,
)

# --- normalize_text -----------------------------------------------------------------------------


def test_normalize_composes_to_nfc() -> None:
    decomposed = "Cafe\u0301 Ame\u0301lie"
    assert normalize_text(decomposed) == "Café Amélie"
    assert unicodedata.is_normalized("NFC", normalize_text(decomposed))
    assert normalize_text("e\u00ad\u0301t\u200be\u0301") == "\u00e9t\u00e9"


def test_normalize_removes_control_and_invisible_characters() -> None:
    text = "\ufeffa\x00b\x07c\x1bd\x7fe\u200bf\u00adg\x9fh"
    assert normalize_text(text) == "abcdefgh"


def test_normalize_turns_every_line_break_into_a_newline() -> None:
    assert normalize_text("a\r\nb\rc\u2028d\u2029e\x0cf\x85g") == "a\nb\nc\nd\ne\nf\ng"


def test_normalize_collapses_horizontal_whitespace_and_strips_lines() -> None:
    text = "  one \t\u00a0\u2003 two\u3000three  \n   four\t\n"
    assert normalize_text(text) == "one two three\nfour"


def test_normalize_keeps_single_newlines_and_makes_paragraph_breaks_one_blank_line() -> None:
    text = "\n\nline one\nline two\n\n\n \t \n\u00a0\nnext paragraph\n\n"
    assert normalize_text(text) == "line one\nline two\n\nnext paragraph"


def test_normalize_handles_every_control_and_space_character_in_unicode() -> None:
    """No Cc or Zs code point (outside the BMP included) survives as itself."""
    specials = [
        chr(c)
        for c in range(sys.maxunicode + 1)
        if unicodedata.category(chr(c)) in ("Cc", "Zs") and chr(c) != " "
    ]
    assert len(specials) > 80
    for char in specials:
        assert normalize_text(f"a{char}b") in ("ab", "a b", "a\nb"), hex(ord(char))


def test_lone_surrogates_become_replacement_characters() -> None:
    """JSON may escape a lone surrogate; it cannot be encoded, so it is marked like bad bytes."""
    assert normalize_text("left \ud800 right \udfff.") == "left \ufffd right \ufffd."
    assert all(
        unicodedata.category(chr(c)) != "Cs" for c in range(0x10000, sys.maxunicode + 1)
    )  # all surrogates lie in the BMP, the range the table covers


def test_normalize_is_idempotent() -> None:
    text = "A\u00a0 b\r\n\r\n\r\nc\u200b d  \n e\u0301"
    assert normalize_text(normalize_text(text)) == normalize_text(text)


# --- paragraphs and sentences -------------------------------------------------------------------


def test_split_paragraphs_joins_hard_wrapped_lines() -> None:
    text = "It was the best\nof times.\n\nIt was the worst\nof times."
    assert split_paragraphs(text) == ["It was the best of times.", "It was the worst of times."]


def test_sentences_do_not_break_at_abbreviations() -> None:
    text = (
        "Mr. Smith moved to the U.S. in 1990. He likes fruit, e.g. apples and pears. "
        "Mrs. Smith met Prof. Jones at 5 p.m. in St. Louis. Dr. Who?"
    )
    assert split_sentences(text) == [
        "Mr. Smith moved to the U.S. in 1990.",
        "He likes fruit, e.g. apples and pears.",
        "Mrs. Smith met Prof. Jones at 5 p.m. in St. Louis.",
        "Dr. Who?",
    ]


def test_sentences_do_not_break_at_decimals() -> None:
    text = "Pi is about 3.14 and e about 2.718. It cost $3.50 in total."
    assert split_sentences(text) == [
        "Pi is about 3.14 and e about 2.718.",
        "It cost $3.50 in total.",
    ]


def test_sentences_keep_quotes_with_their_sentence() -> None:
    assert split_sentences('He said "Go home." Then he left.') == [
        'He said "Go home."',
        "Then he left.",
    ]
    assert split_sentences('"Stop!" he said. She ran.') == ['"Stop!" he said.', "She ran."]
    assert split_sentences('He yelled "Stop!" and ran. Then he stopped.') == [
        'He yelled "Stop!" and ran.',
        "Then he stopped.",
    ]


def test_chinese_sentences_split_at_terminators_keeping_closing_quotes() -> None:
    text = "他说：“你好。”我们走吧！真的吗？「好的！」她回答。（注：这是括号。）"
    assert split_sentences(text) == [
        "他说：“你好。”",
        "我们走吧！",
        "真的吗？",
        "「好的！」",
        "她回答。",
        "（注：这是括号。）",
    ]


def test_runs_of_chinese_terminators_stay_with_their_sentence() -> None:
    assert split_sentences("什么？！不可能。。。好吧") == ["什么？！", "不可能。。。", "好吧"]


def test_mixed_english_and_chinese_split_at_both_kinds_of_terminator() -> None:
    text = "I love Beijing. 我爱北京。It is big! 北京很大！Dr. Li agrees."
    assert split_sentences(text) == [
        "I love Beijing.",
        "我爱北京。",
        "It is big!",
        "北京很大！",
        "Dr. Li agrees.",
    ]


def test_sentences_of_empty_or_blank_paragraph_are_none() -> None:
    assert split_sentences("") == []
    assert split_sentences("   ") == []


# --- limits -------------------------------------------------------------------------------------


def test_short_sentences_are_dropped_and_counted() -> None:
    text = "Chapter 1.\n\nThis sentence is long enough to keep. Go on. And so is this one here."
    sentences, short, long = document_sentences(text, SentenceLimits(min_chars=12, max_chars=200))
    assert sentences == ["This sentence is long enough to keep.", "And so is this one here."]
    assert (short, long) == (2, 0)


def test_long_sentences_are_cut_at_whitespace_and_counted() -> None:
    text = "one two three four five six seven eight nine ten. Short one."
    sentences, short, long = document_sentences(text, SentenceLimits(min_chars=1, max_chars=20))
    assert (short, long) == (0, 1)
    assert sentences == ["one two three four", "five six seven eight", "nine ten.", "Short one."]
    assert all(len(s) <= 20 for s in sentences)


def test_long_sentence_without_spaces_is_cut_hard() -> None:
    text = "这是一个非常非常非常非常长的中文句子没有任何空格。"
    sentences, _, long = document_sentences(text, SentenceLimits(min_chars=1, max_chars=10))
    assert long == 1
    assert [len(s) for s in sentences] == [10, 10, 5]
    assert "".join(sentences) == text


def test_cut_long_never_exceeds_the_limit_and_loses_no_words() -> None:
    sentence = "a bb ccc dddd eeeee ffffffffffffffffffff g"
    pieces = cut_long(sentence, 7)
    assert all(0 < len(p) <= 7 for p in pieces)
    assert "".join(p.replace(" ", "") for p in pieces) == sentence.replace(" ", "")


def test_document_sentences_normalises_first() -> None:
    text = "First\u00a0 sentence is\nwrapped.\x00 Second one.\r\n\r\nThird\u200b paragraph."
    sentences, _, _ = document_sentences(text, SentenceLimits(min_chars=1, max_chars=100))
    assert sentences == ["First sentence is wrapped.", "Second one.", "Third paragraph."]


@pytest.mark.parametrize(
    ("min_chars", "max_chars", "field"), [(-1, 10, "min_chars"), (5, 4, "max_chars"), (0, 0, "max")]
)
def test_bad_limits_are_rejected_naming_the_field(
    min_chars: int, max_chars: int, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        SentenceLimits(min_chars=min_chars, max_chars=max_chars)


@pytest.mark.parametrize(
    "text",
    ["", "One. Two.", "Café au lait. Übermäßig! 我们去公园。天气很好！", "x" * 200_000 + ". End."],
)
def test_reused_buffer_segmenter_matches_blingfire_own_wrapper(text):
    """The buffer-reusing call gives exactly what blingfire.text_to_sentences gives, at any size."""
    import blingfire

    from bertflow.pipeline.ingest.clean import _BLINGFIRE

    assert _BLINGFIRE.sentences(text) == blingfire.text_to_sentences(text)
