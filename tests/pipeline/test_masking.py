"""BERT's masking rule: rates, specials, whole words, and independence from batching."""

from __future__ import annotations

import numpy as np

from bertflow.pipeline.shards.masking import IGNORE_INDEX, MaskingRule, mask_batch

VOCAB = 1000
SPECIAL = np.zeros(VOCAB, bool)
SPECIAL[:5] = True  # [PAD] [UNK] [CLS] [SEP] [MASK]
CONTINUATION = np.zeros(VOCAB, bool)
CONTINUATION[500:] = True  # ids >= 500 play `##` pieces
MASK_ID = 4


def batch(n: int = 2000, length: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB, size=(n, length))
    ids[:, 0], ids[:, 60], ids[:, -1] = 2, 3, 3
    ids[: n // 2, 100:] = 0  # padding on half the rows
    return ids


def rule(**kw) -> MaskingRule:
    return MaskingRule(mask_id=MASK_ID, special=SPECIAL, continuation=CONTINUATION, **kw)


def test_rates_follow_bert_15_percent_and_80_10_10():
    ids = batch()
    masked, labels = mask_batch(
        ids, rule(max_predictions=1000), seed=7, example_index=np.arange(len(ids))
    )
    chosen = labels != IGNORE_INDEX
    assert not chosen[SPECIAL[ids]].any()
    assert abs(chosen.sum() / (~SPECIAL[ids]).sum() - 0.15) < 0.005
    assert (labels[chosen] == ids[chosen]).all()
    to_mask = (masked[chosen] == MASK_ID).mean()
    unchanged = (masked[chosen] == ids[chosen]).mean()
    assert abs(to_mask - 0.8) < 0.02 and abs(unchanged - 0.1) < 0.02
    assert not SPECIAL[
        masked[chosen & (masked != MASK_ID)]
    ].any()  # random tokens are never special
    assert (masked[~chosen] == ids[~chosen]).all()


def test_short_examples_are_masked_at_the_asked_rate_in_expectation():
    """29 candidates (a 32-token pair): 4 or 5 predictions, averaging 4.35 (15%), where
    round(29 * 0.15) would give 4 (13.8%) every time."""
    ids = np.random.default_rng(0).integers(5, VOCAB, size=(4000, 32))
    ids[:, 0], ids[:, 16], ids[:, -1] = 2, 3, 3
    _, labels = mask_batch(ids, rule(max_predictions=5), seed=2, example_index=np.arange(4000))
    counts = (labels != IGNORE_INDEX).sum(axis=1)
    assert set(np.unique(counts)) == {4, 5}
    assert abs(counts.mean() / 29 - 0.15) < 0.003


def test_max_predictions_caps_each_example():
    ids = batch(200)
    _, labels = mask_batch(ids, rule(max_predictions=5), seed=1, example_index=np.arange(200))
    assert ((labels != IGNORE_INDEX).sum(axis=1) == 5).all()


def test_an_example_is_masked_the_same_alone_or_in_any_batch():
    ids = batch(64)
    index = np.arange(1000, 1064)
    whole, whole_labels = mask_batch(ids, rule(), seed=3, example_index=index)
    for i in (0, 17, 63):
        alone, alone_labels = mask_batch(
            ids[i : i + 1], rule(), seed=3, example_index=index[i : i + 1]
        )
        assert (alone[0] == whole[i]).all() and (alone_labels[0] == whole_labels[i]).all()
    other_epoch, _ = mask_batch(ids, rule(), seed=4, example_index=index)
    assert (other_epoch != whole).any()


def test_whole_word_masking_takes_every_piece_of_a_chosen_word():
    ids = batch(500)
    _, labels = mask_batch(ids, rule(whole_word=True), seed=5, example_index=np.arange(500))
    chosen = labels != IGNORE_INDEX
    for row, picked in zip(ids, chosen, strict=True):
        candidate = ~SPECIAL[row]
        start = candidate & ~CONTINUATION[row]
        start[1:] |= candidate[1:] & ~candidate[:-1]
        word = np.cumsum(start)
        for w in np.unique(word[picked]):
            in_word = (word == w) & candidate
            assert picked[in_word].all()
    share = chosen.sum() / (~SPECIAL[ids]).sum()
    assert 0.145 < share < 0.155  # budgets filled exactly: n * 0.15, rounded at random, per row


def test_whole_word_masking_skips_a_word_that_does_not_fit_and_goes_on():
    """[CLS] w ##a ##b [SEP] v [SEP]: one prediction; the three-piece word never fits, v always."""
    continuation = np.zeros(VOCAB, bool)
    continuation[[11, 12]] = True
    ids = np.array([[2, 10, 11, 12, 3, 20, 3]] * 200)
    wwm = MaskingRule(mask_id=MASK_ID, special=SPECIAL, continuation=continuation, whole_word=True)
    _, labels = mask_batch(ids, wwm, seed=9, example_index=np.arange(200))
    assert ((labels != IGNORE_INDEX) == (np.arange(7) == 5)).all()


def test_labels_are_int64_even_for_uint16_ids():
    ids = batch(4).astype(np.uint16)
    _, labels = mask_batch(ids, rule(), seed=1, example_index=np.arange(4))
    assert labels.dtype == np.int64 and labels.min() == IGNORE_INDEX
