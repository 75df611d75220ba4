"""The model: masked-only MLM head, padded vocabulary, initialisation, presets, FLOPs."""

from __future__ import annotations

import pytest
import torch

from bertflow.model.bert import (
    BertConfig,
    BertForPreTraining,
    BertForSequenceClassification,
    base,
    parameter_count,
    preset,
    tiny,
    training_flops,
)

VOCAB = 1000


def batch(padded: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (3, 24), generator=g)
    mask = torch.ones_like(ids)
    if padded:
        mask[1, 15:] = 0
        mask[2, 9:] = 0
        ids[mask == 0] = 0
    labels = torch.full_like(ids, -100)
    chosen = (torch.rand(ids.shape, generator=g) < 0.2) & mask.bool()
    labels[chosen] = ids[chosen]
    types = torch.zeros_like(ids)
    types[:, 12:] = 1
    return {
        "input_ids": ids,
        "token_type_ids": types * mask,
        "attention_mask": mask,
        "labels": labels,
    }


@pytest.mark.parametrize("padded", [False, True])
def test_masked_only_head_equals_the_full_head_at_masked_positions(padded):
    model = BertForPreTraining(tiny(vocab_size=VOCAB)).eval()
    b = batch(padded)
    with torch.no_grad():
        masked = model(**b)
        full = model(b["input_ids"], b["token_type_ids"], b["attention_mask"])
    where = b["labels"] != -100
    assert masked.mlm_logits.shape == (int(where.sum()), VOCAB)
    torch.testing.assert_close(masked.mlm_logits, full.mlm_logits[where], atol=1e-5, rtol=0)
    assert torch.equal(masked.mlm_targets, b["labels"][where])
    torch.testing.assert_close(masked.nsp_logits, full.nsp_logits, atol=1e-6, rtol=0)


def test_vocabulary_is_padded_inside_the_model_and_the_decoder_is_tied():
    model = BertForPreTraining(tiny(vocab_size=VOCAB))
    embeddings = model.bert.embeddings.word_embeddings.weight
    assert embeddings.shape == (1024, 128) and model.config.padded_vocab_size == 1024
    assert model.cls.predictions.decoder.weight is embeddings
    out = model(**batch(padded=True))
    assert out.mlm_logits.shape[-1] == VOCAB  # padded rows are never predicted
    torch.nn.functional.cross_entropy(out.mlm_logits, out.mlm_targets).backward()
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0


def test_initialisation_is_berts_truncated_normal():
    model = BertForPreTraining(base(vocab_size=VOCAB, num_layers=1))
    weight = model.bert.encoder.layer[0].intermediate.dense.weight
    assert weight.abs().max() <= 0.04 + 1e-7
    assert weight.std().item() == pytest.approx(0.02 * 0.88, rel=0.03)  # truncation at 2 std
    assert torch.equal(model.bert.encoder.layer[0].intermediate.dense.bias, torch.zeros(3072))
    norm = model.bert.embeddings.LayerNorm
    assert torch.equal(norm.weight, torch.ones(768)) and torch.equal(norm.bias, torch.zeros(768))


def test_presets_have_the_published_sizes():
    assert parameter_count(BertForPreTraining(base())) == pytest.approx(110.1e6, rel=0.01)
    assert (tiny().num_layers, tiny().hidden_size) == (2, 128)
    big = preset("large")
    assert (big.num_layers, big.hidden_size, big.num_heads) == (24, 1024, 16)
    with pytest.raises(ValueError, match="unknown model preset 'huge'.*tiny, mini"):
        preset("huge")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"hidden_size": 100, "num_heads": 3}, "hidden_size \\(100\\) must be a multiple"),
        ({"num_layers": 0}, "num_layers must be positive"),
        ({"hidden_dropout": 1.0}, "hidden_dropout must be in"),
    ],
)
def test_bad_architectures_name_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        BertConfig(**fields)


def test_training_flops_follow_the_stated_formula():
    config = tiny(vocab_size=VOCAB)
    H, F, V, n = 128, 512, 1024, 2
    lengths = torch.tensor([10, 24])
    per_example = [
        n * (2 * L * (4 * H * H + 2 * H * F) + 4 * L * L * H) + 2 * H * H + 4 * H for L in (10, 24)
    ]
    expected = 3 * (sum(per_example) + 2 * 7 * (H * H + H * V))
    assert training_flops(config, lengths, masked=7) == expected
    doubled = training_flops(config, torch.cat([lengths, lengths]), masked=14)
    assert doubled == 2 * expected


def test_dropout_is_on_in_training_and_off_in_eval():
    model = BertForPreTraining(tiny(vocab_size=VOCAB))
    b = batch(padded=True)
    model.train()
    assert not torch.equal(model(**b).mlm_logits, model(**b).mlm_logits)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**b).mlm_logits, model(**b).mlm_logits)


def test_mean_pooling_reads_the_real_tokens_only():
    """Padding a sequence does not change what a mean-pooling classifier says about it, and what
    it reads is the last layer's mean over the real tokens."""
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny(vocab_size=VOCAB), num_labels=3, pooling="mean")
    model.eval()
    ids = torch.randint(5, VOCAB, (1, 10))
    padded = torch.cat([ids, torch.zeros(1, 6, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 10, dtype=torch.long), torch.zeros(1, 6, dtype=torch.long)], 1)
    with torch.no_grad():
        alone = model(ids, attention_mask=torch.ones_like(ids))
        with_padding = model(padded, attention_mask=mask)
        sequence, _ = model.bert(ids, attention_mask=torch.ones_like(ids))
    torch.testing.assert_close(with_padding, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone, model.classifier(sequence.mean(1)))


def test_an_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="pooling must be one of"):
        BertForSequenceClassification(tiny(vocab_size=VOCAB), num_labels=2, pooling="max")
