"""The BERT example recipe on a synthetic corpus whose token ids name their document."""

from __future__ import annotations

import random

import pytest

from bertflow.pipeline.shards.examples import NO_LABEL, document_examples, truncate_pair

CLS, SEP = 2, 3
MAX_LEN = 64


def synthetic_corpus(n_docs: int = 150, seed: int = 0) -> list[list[list[int]]]:
    """Document d's tokens are 1000 * (d + 1) + running position, so a token names its document
    and its place in it."""
    rng = random.Random(seed)
    docs = []
    for d in range(n_docs):
        position, doc = 0, []
        for _ in range(rng.randint(1, 25)):
            length = rng.randint(3, 30)
            doc.append([1000 * (d + 1) + position + i for i in range(length)])
            position += length
        docs.append(doc)
    return docs


def make(objective="nsp", short_seq_prob=0.1, docs=None, seed=1):
    docs = docs or synthetic_corpus()
    rng = random.Random(seed)
    out = []
    for d in range(len(docs)):
        for example in document_examples(
            docs, d, MAX_LEN, short_seq_prob, objective, rng, CLS, SEP
        ):
            out.append((d, example))
    return out


def segments(tokens: list[int], a_len: int) -> tuple[list[int], list[int]]:
    return tokens[1 : a_len - 1], tokens[a_len:-1]


def test_examples_are_framed_and_never_longer_than_max_seq_len():
    for _, (tokens, a_len, _) in make():
        assert len(tokens) <= MAX_LEN
        assert tokens[0] == CLS and tokens[a_len - 1] == SEP and tokens[-1] == SEP
        a, b = segments(tokens, a_len)
        assert a and b and CLS not in a + b and SEP not in a + b


def test_random_next_share_is_about_half_and_never_from_the_same_document():
    examples = make()
    random_next = [(d, ex) for d, ex in examples if ex[2] == 1]
    assert 0.45 < len(random_next) / len(examples) < 0.62  # one-sentence chunks are always random
    for d, (tokens, a_len, _) in random_next:
        a, b = segments(tokens, a_len)
        assert {t // 1000 - 1 for t in a} == {d}
        assert d not in {t // 1000 - 1 for t in b}
    for d, (tokens, a_len, label) in examples:
        if label == 0:
            a, b = segments(tokens, a_len)
            assert {t // 1000 - 1 for t in a + b} == {d} and max(a) < min(b)  # b follows a


def test_short_sequence_probability_shortens_examples():
    def short_share(p: float) -> float:
        examples = make(short_seq_prob=p)
        return sum(len(ex[0]) < MAX_LEN // 2 for _, ex in examples) / len(examples)

    none, some, always = short_share(0.0), short_share(0.1), short_share(1.0)
    assert none < some < always and always > 2 * none


def test_sentence_order_pairs_are_actual_next_and_half_swapped():
    examples = make(objective="sop")
    swapped = [ex for _, ex in examples if ex[2] == 1]
    assert 0.4 < len(swapped) / len(examples) < 0.6
    for d, (tokens, a_len, label) in examples:
        a, b = segments(tokens, a_len)
        assert {t // 1000 - 1 for t in a + b} == {d}
        assert (max(b) < min(a)) if label == 1 else (max(a) < min(b))


def test_no_pair_objective_packs_one_segment_without_label():
    examples = make(objective="none")
    for _, (tokens, a_len, label) in examples:
        assert label == NO_LABEL and a_len == len(tokens) <= MAX_LEN
        assert tokens.count(SEP) == 1


def test_lone_document_never_pairs_with_itself():
    docs = [synthetic_corpus(1)[0] * 3]
    assert {label for _, (_, _, label) in make(docs=docs)} == {0}


@pytest.mark.parametrize("la, lb, limit", [(50, 10, 40), (30, 30, 41), (5, 80, 20), (10, 10, 40)])
def test_truncation_trims_the_longer_side_to_fit(la, lb, limit):
    a, b = list(range(la)), list(range(100, 100 + lb))
    ta, tb = truncate_pair(a, b, limit, random.Random(0))
    assert len(ta) + len(tb) == min(limit, la + lb)
    assert abs(len(ta) - len(tb)) <= 1 or min(len(ta), len(tb)) == min(la, lb)
    assert ta == a[a.index(ta[0]) : a.index(ta[0]) + len(ta)]  # a contiguous piece of a
