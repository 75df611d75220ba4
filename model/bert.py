"""BERT for pretraining (masked LM + next sentence), as published, in one file with no I/O.

Parameter names follow HuggingFace's `BertForPreTraining`, so a state dict maps onto it key for key
(`hf_state_dict` trims the padded vocabulary back to the tokenizer's). Three things are faster
than the textbook layout without changing the maths:
- the MLM head runs only at the masked positions (about 15% of tokens), so the vocabulary
  projection, the largest matmul of a small model, costs a seventh of the usual;
- the embedding/decoder matrix has `padded_vocab_size` rows, a multiple of 64, so its matmuls
  tile well; the padded rows are never predicted (their logits are cut off before the softmax);
- attention is `scaled_dot_product_attention` (flash/memory-efficient kernels where available).

Shapes in comments: B batch, L sequence length, H hidden size, nh heads, hs head size, N masked
positions in the batch, V padded vocabulary.
"""

from __future__ import annotations

from typing import NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import nn

# The config and presets live in bert_config.py (no torch); imported from here as before.
from bertflow.model.bert_config import (  # noqa: F401
    PRESETS,
    BertConfig,
    Pooling,
    base,
    large,
    medium,
    mini,
    preset,
    small,
    tiny,
)

# -- the model ------------------------------------------------------------------------------------


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.padded_vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)  # (L, H), broadcast over B
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(x))  # (B, L, H)


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads, self.head_size = config.num_heads, config.head_size
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, L, H = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, L, self.num_heads, self.head_size).transpose(1, 2)  # (B, nh, L, hs)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0
        )  # (B, nh, L, hs)
        return y.transpose(1, 2).reshape(B, L, H)


class BertSelfOutput(nn.Module):
    """Projection, dropout, residual, then LayerNorm (BERT is post-LN)."""

    def __init__(self, config: BertConfig, width: int):
        super().__init__()
        self.dense = nn.Linear(width, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, y: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(y)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config, config.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # exact (erf) GELU, as BERT


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertSelfOutput(config, config.intermediate_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, mask)
        return x


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(x[:, 0]))  # (B, H): the [CLS] position


class BertModel(nn.Module):
    """The encoder: embeddings, layers and pooler."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) ids -> sequence output (B, L, H) and pooled output (B, H)."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = None
        if attention_mask is not None and (
            torch.compiler.is_compiling() or not bool(attention_mask.all())
        ):  # no mask lets SDPA pick its fastest kernel; compiled graphs keep it (no host sync)
            mask = attention_mask[:, None, None, :].bool()  # (B, 1, 1, L): True attends
        x = self.encoder(self.embeddings(input_ids, token_type_ids), mask)
        return x, self.pooler(x)


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    """transform, then the decoder whose weight is the token embedding matrix (tied)."""

    def __init__(self, config: BertConfig, embeddings: nn.Embedding):
        super().__init__()
        self.vocab_size = config.vocab_size
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.padded_vocab_size, bias=False)
        self.decoder.weight = embeddings.weight
        self.bias = nn.Parameter(torch.zeros(config.padded_vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., H) hidden states -> (..., vocab_size) logits (the padded rows cut off)."""
        logits = F.linear(self.transform(x), self.decoder.weight, self.bias)
        return logits[..., : self.vocab_size]


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig, embeddings: nn.Embedding):
        super().__init__()
        self.predictions = BertLMPredictionHead(config, embeddings)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


class PretrainingOutput(NamedTuple):
    mlm_logits: torch.Tensor
    """(N, vocab_size) at the masked positions (labels != ignore_index), in row-major order;
    (B, L, vocab_size) when every position was asked for."""
    mlm_targets: torch.Tensor
    """(N,) the labels at those positions; empty when no labels were given."""
    nsp_logits: torch.Tensor
    """(B, 2): is-next (0) / random-next (1), as BERT's labels."""


def init_weights(module: nn.Module, std: float) -> None:
    """BERT's: weights from a normal truncated at 2 std, biases 0, LayerNorm 1/0."""
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class BertForPreTraining(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config, self.bert.embeddings.word_embeddings)
        self.apply(lambda module: init_weights(module, config.initializer_range))

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        ignore_index: int = -100,
    ) -> PretrainingOutput:
        """With `labels` (B, L), MLM logits only where labels != ignore_index; without, at every
        position (for inspection and parity checks: the head is the same)."""
        sequence, pooled = self.bert(input_ids, token_type_ids, attention_mask)
        if labels is None:
            mlm_logits = self.cls.predictions(sequence)  # (B, L, vocab)
            targets = input_ids.new_empty(0)
        else:
            where = (labels != ignore_index).flatten()  # (B*L,)
            picked = sequence.flatten(0, 1)[where]  # (N, H)
            mlm_logits, targets = self.cls.predictions(picked), labels.flatten()[where]
        return PretrainingOutput(mlm_logits, targets, self.cls.seq_relationship(pooled))


# -- FLOPs, for model FLOPs utilisation -----------------------------------------------------------


def training_flops(config: BertConfig, lengths: torch.Tensor, masked: int) -> float:
    """Matmul FLOPs of one training step (forward + backward) on examples of these real lengths.

    A matmul of (m, k) by (k, n) is 2*m*k*n FLOPs; the backward pass costs twice the forward
    (gradients for inputs and for weights), so a step is 3x the forward. Per example of length L
    with hidden H, feed-forward width F_, layers n, and the vocabulary V (padded):
        per layer  2*L*(4*H*H + 2*H*F_)   Q, K, V and output projections, feed-forward
                 + 2*2*L*L*H             scores Q.K^T and the weighted sum over V
        pooler     2*H*H  and NSP head 2*H*2   (the [CLS] position only)
    plus for the batch's N masked positions the MLM head 2*N*(H*H + H*V).
    Padding is not counted (it is not useful work), nor are embeddings, norms and softmax.
    """
    H, F_, V = config.hidden_size, config.intermediate_size, config.padded_vocab_size
    lengths = lengths.double()
    per_layer = 2 * lengths * (4 * H * H + 2 * H * F_) + 4 * lengths.square() * H
    per_example = config.num_layers * per_layer + 2 * H * H + 4 * H
    forward = float(per_example.sum()) + 2 * masked * (H * H + H * V)
    return 3 * forward


def parameter_count(model: nn.Module) -> int:
    """Distinct parameters (the tied decoder weight counts once)."""
    return sum(p.numel() for p in model.parameters())


def hf_state_dict(model: BertForPreTraining) -> dict[str, torch.Tensor]:
    """The model's weights under HuggingFace `BertForPreTraining` names and shapes.

    The padded vocabulary rows are dropped, the tied decoder weight is left to HF's tying (as its
    own checkpoints do), and every tensor is a contiguous copy on the CPU.
    """
    vocab = model.config.vocab_size
    out = {}
    for name, tensor in model.state_dict().items():
        if name == "cls.predictions.decoder.weight":
            continue
        if name in ("bert.embeddings.word_embeddings.weight", "cls.predictions.bias"):
            tensor = tensor[:vocab]
        out[name] = tensor.detach().to("cpu", copy=True).contiguous()
    return out


def load_hf_state_dict(model: BertForPreTraining, state: dict[str, torch.Tensor]) -> None:
    """Load weights named as HF's `BertForPreTraining` (the inverse of `hf_state_dict`)."""
    own = model.state_dict()
    padded = {}
    for name, tensor in state.items():
        if name in ("bert.embeddings.word_embeddings.weight", "cls.predictions.bias"):
            full = own[name].clone()
            full[: tensor.shape[0]] = tensor
            tensor = full
        padded[name] = tensor
    missing, unexpected = model.load_state_dict(padded, strict=False)
    missing = [k for k in missing if k != "cls.predictions.decoder.weight"]
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(
            f"weights do not fit the model: missing {missing}, unexpected {unexpected}"
        )


class BertForSequenceClassification(nn.Module):
    """The encoder with a classifier, as HuggingFace's (same names): `num_labels` classes, or one
    output for regression. It reads the pooled [CLS] output (`pooling="cls"`, HuggingFace's), or
    the mean of the last layer over the real tokens (`"mean"`; the pooler is then unused)."""

    def __init__(self, config: BertConfig, num_labels: int, pooling: Pooling = "cls"):
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {num_labels}")
        if pooling not in get_args(Pooling):
            raise ValueError(f"pooling must be one of {get_args(Pooling)}, got {pooling!r}")
        self.config, self.num_labels, self.pooling = config, num_labels, pooling
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.apply(lambda module: init_weights(module, config.initializer_range))

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, L) ids -> (B, num_labels) logits (or (B, 1) regression outputs)."""
        sequence, pooled = self.bert(input_ids, token_type_ids, attention_mask)
        if self.pooling == "mean":
            real = (
                (attention_mask if attention_mask is not None else torch.ones_like(input_ids))
                .unsqueeze(-1)
                .to(sequence.dtype)
            )
            pooled = (sequence * real).sum(1) / real.sum(1).clamp(min=1.0)
        return self.classifier(self.dropout(pooled))
