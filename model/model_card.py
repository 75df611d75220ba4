"""The model card: the `README.md` of a model's HuggingFace folder, with the Hub's metadata.

Everything on it is read from manifests: the model's own (architecture, recipe, training), its
lineage's (shards, tokenizer, corpus, and any model it continued from) and, when the store holds
one, its latest evaluation's. An evaluation is a later artifact than the model, so `bertflow
export` renders the card when it runs; the card published inside the model artifact
(`hf/README.md`) is rendered the same way, before any evaluation exists.

The front matter follows the Hub's model-card metadata: `library_name`, `pipeline_tag`, `tags`
and, with an evaluation, `model-index` results. `language`, `license` and `datasets` are left
out: nothing in the lineage records them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from bertflow.model.metric_format import INTRINSIC
from bertflow.pipeline.core.manifest import Manifest
from bertflow.pipeline.core.markdown import markdown_table
from bertflow.pipeline.core.store import ArtifactStore

MODEL_CARD_FILE = "README.md"
OBJECTIVES = {"nsp": "next-sentence prediction", "sop": "sentence-order prediction"}


@dataclass(frozen=True)
class ModelFacts:
    """What the card reads of a model: its manifest's fields, or, while the model is being
    published, the ones its manifest will have."""

    id: str
    config: dict[str, Any]
    upstream: dict[str, str]
    layout: dict[str, Any]
    stats: dict[str, Any]

    @classmethod
    def of(cls, manifest: Manifest) -> ModelFacts:
        return cls(manifest.id, manifest.config, manifest.upstream, manifest.layout, manifest.stats)


@dataclass(frozen=True)
class CardEvaluation:
    """What an evaluation adds to the card: its section's lines and the model-index results."""

    lines: list[str]
    results: list[dict[str, Any]]


def render_model_card(
    store: ArtifactStore, model: ModelFacts, evaluation: CardEvaluation | None = None
) -> str:
    """Front matter, then the recipe, the data, the training and the evaluation."""
    phases = training_phases(store, model)
    shards = store.get(model.upstream["shards"])
    lines = [
        "---",
        yaml.safe_dump(front_matter(model, evaluation), sort_keys=False).rstrip(),
        "---",
        "",
        f"# {model.id}",
        "",
    ]
    lines += [_summary(model), ""]
    lines += _usage()
    lines += _recipe(model, shards)
    lines += _data(store, phases)
    lines += _training(store, phases)
    lines += evaluation.lines if evaluation is not None else _no_evaluation(model)
    return "\n".join(lines) + "\n"


def training_phases(store: ArtifactStore, model: ModelFacts) -> list[ModelFacts]:
    """The model and every model it continued from (`--init-from`), the first trained first."""
    phases = [model]
    while (parent_id := phases[0].upstream.get("init")) is not None:
        parent = store.get(parent_id)
        if parent is None or parent_id in {p.id for p in phases}:
            break
        phases.insert(0, ModelFacts.of(parent))
    return phases


def front_matter(model: ModelFacts, evaluation: CardEvaluation | None) -> dict[str, Any]:
    objective = model.layout.get("objective", "none")
    tags = ["bert", "bertflow", "masked-lm"] + ([objective] if objective in OBJECTIVES else [])
    meta: dict[str, Any] = {
        "library_name": "transformers",
        "pipeline_tag": "fill-mask",
        "tags": tags,
    }
    if evaluation is not None:
        meta["model-index"] = [{"name": model.id, "results": evaluation.results}]
    return meta


def _summary(model: ModelFacts) -> str:
    arch = model.layout.get("architecture", {})
    objective = OBJECTIVES.get(model.layout.get("objective", "none"))
    task = "masked language modelling" + (f" and {objective}" if objective else "")
    return (
        f"A BERT encoder ({arch.get('num_layers')} layers, hidden size "
        f"{arch.get('hidden_size')}) pretrained by bertflow with {task}. Every number on "
        "this card is read from the manifests of the model's artifacts."
    )


def _usage() -> list[str]:
    return [
        "## Use",
        "",
        "```python",
        "from transformers import AutoTokenizer, BertForPreTraining, pipeline",
        "",
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
        'model = BertForPreTraining.from_pretrained("path/to/this/folder")',
        'fill = pipeline("fill-mask", model="path/to/this/folder")',
        "```",
        "",
    ]


def _recipe(model: ModelFacts, shards: Manifest | None) -> list[str]:
    arch, stats, config = model.layout.get("architecture", {}), model.stats, model.config
    preset = f"preset `{config['preset']}`: " if config.get("preset") else ""
    rows = [
        [
            "architecture",
            f"BERT, {preset}{arch.get('num_layers')} layers, hidden "
            f"{arch.get('hidden_size')}, {arch.get('num_heads')} heads, feed-forward "
            f"{arch.get('intermediate_size')}, {arch.get('max_position_embeddings')} positions, "
            f"vocabulary {_count(arch.get('vocab_size'))}; {_count(stats.get('parameters'))} "
            "parameters",
        ],
        ["objective", _objective(model, shards)],
        ["sequence length", f"{model.layout.get('max_seq_len')} tokens"],
        [
            "optimiser",
            f"AdamW, peak lr {config.get('lr')}, {config.get('schedule')} schedule, "
            f"{config.get('warmup_steps')} warm-up steps, weight decay {config.get('weight_decay')}"
            f", gradient clipping {config.get('grad_clip')}",
        ],
        ["precision", str(stats.get("precision"))],
    ]
    return ["## Recipe", "", *markdown_table(["", ""], rows, text_columns=2), ""]


def _objective(model: ModelFacts, shards: Manifest | None) -> str:
    pair = OBJECTIVES.get(model.layout.get("objective", "none"))
    if shards is None:
        return "masked language modelling" + (f" + {pair}" if pair else "")
    layout = shards.layout
    rate = model.config.get("mlm_prob") or layout.get("mlm_prob")
    words = "whole words" if layout.get("whole_word") else "WordPiece tokens"
    masking = (
        f"masked language modelling: {rate:.0%} of {words}, at most "
        f"{layout.get('max_predictions')} per sequence, {layout.get('masking')} "
        "masking"
    )
    return masking + (f"; {pair}" if pair else "")


def _data(store: ArtifactStore, phases: list[ModelFacts]) -> list[str]:
    """The corpus, tokenizer and shards of every phase, with their sizes."""
    rows: list[list[str]] = []
    seen: set[str] = set()
    for phase in phases:
        shards_id = phase.upstream["shards"]
        shards = store.get(shards_id)
        upstream = shards.upstream if shards is not None else {}
        for role, artifact_id in (
            ("corpus", upstream.get("corpus")),
            ("tokenizer", upstream.get("tokenizer")),
            ("shards", shards_id),
        ):
            if artifact_id is None or artifact_id in seen:
                continue
            seen.add(artifact_id)
            manifest = store.get(artifact_id)
            contents = _contents(manifest) if manifest is not None else "missing from the store"
            rows.append([role, f"`{artifact_id}`", contents])
    return ["## Data", "", *markdown_table(["artifact", "id", "contents"], rows, 3), ""]


def _contents(manifest: Manifest) -> str:
    s = manifest.stats
    if manifest.kind == "corpus":
        docs, sentences, chars = (s.get(k, {}) for k in ("documents", "sentences", "characters"))
        sources = ", ".join(map(str, manifest.config.get("sources", [])[:5]))
        more = len(manifest.config.get("sources", [])) - 5
        sources += f" and {more} more" if more > 0 else ""
        return (
            f"{_count(docs.get('train'))} train / {_count(docs.get('validation'))} validation "
            f"documents, {_count(sum(sentences.values()))} sentences, "
            f"{_count(sum(chars.values()))} characters from {_count(s.get('input_bytes'))} "
            f"input bytes; sources: {sources}"
        )
    if manifest.kind == "tokenizer":
        case = "uncased" if manifest.config.get("lowercase") else "cased"
        how = "imported" if s.get("imported_vocab") else "trained"
        return f"WordPiece, {_count(s.get('vocab_size'))} tokens, {case} ({how})"
    train, validation = s.get("train", {}), s.get("validation", {})
    return (
        f"{_count(train.get('examples'))} train examples ({_count(train.get('tokens'))} "
        f"tokens), {_count(validation.get('examples'))} validation examples, at most "
        f"{manifest.layout.get('max_seq_len')} tokens, {manifest.layout.get('objective')} "
        "pairs"
    )


def _training(store: ArtifactStore, phases: list[ModelFacts]) -> list[str]:
    head = [
        "phase",
        "model",
        "shards",
        "hardware",
        "steps",
        "global batch",
        "examples seen",
        "tokens seen (≈)",
        "time",
    ]
    rows = []
    for number, phase in enumerate(phases, 1):
        s = phase.stats
        rows.append(
            [
                str(number),
                f"`{phase.id}`",
                f"`{phase.upstream['shards']}`",
                _hardware(s),
                _count(s.get("steps")),
                _count(s.get("global_batch")),
                _count(s.get("examples_seen")),
                _tokens_seen(store, phase),
                _duration(s.get("seconds")),
            ]
        )
    lines = ["## Training", "", *markdown_table(head, rows, text_columns=4), ""]
    lines += ["Tokens seen: examples seen times the shards' mean tokens per training example.", ""]
    validation = phases[-1].stats.get("validation", {})
    scores = [
        f"{label} {validation[key]:.4f}"
        for key, label, _ in INTRINSIC
        if key in validation and key != "perplexity"
    ]
    if scores:
        lines += [
            f"Final validation ({_count(validation.get('examples'))} examples): "
            f"{', '.join(scores)}.",
            "",
        ]
    return lines


def _tokens_seen(store: ArtifactStore, phase: ModelFacts) -> str:
    shards = store.get(phase.upstream["shards"])
    train = shards.stats.get("train", {}) if shards is not None else {}
    if not train.get("examples") or phase.stats.get("examples_seen") is None:
        return "—"
    return _count(phase.stats["examples_seen"] * train["tokens"] / train["examples"])


def _no_evaluation(model: ModelFacts) -> list[str]:
    return [
        "## Evaluation",
        "",
        "No evaluation of this model was in the store when this card was written: "
        f"`bertflow evaluate --model {model.id} --task ...`, then "
        f"`bertflow export {model.id} --out DIR`, writes one with its scores beside the "
        "baselines.",
        "",
    ]


def _hardware(stats: dict[str, Any]) -> str:
    world = stats.get("world_size") or 1
    return f"{world} x {stats.get('device')}" if world > 1 else str(stats.get("device"))


def _count(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"
