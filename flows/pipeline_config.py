"""The pipeline's one parameter: a typed config with a section per stage, and its presets.

The Prefect UI renders it as a form (each stage's fields with their descriptions, choices as
drop-downs, bounds checked); `bertflow run --config pipeline.yaml` loads the same from YAML. A bad
value is rejected naming its field, e.g. `phases.0.pretrain.max_steps`.

Presets are functions: `demo()` (the default: the built-in corpus and the tiny model, a few
minutes on a laptop CPU) and `bert_base()` (the published BERT-base recipe: 30522 uncased
WordPiece, 128-token sequences for 900k steps, then 512 for 100k at batch 256).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bertflow.model.evaluation.config import EvaluateConfig
from bertflow.model.evaluation.task_spec import TaskSpec
from bertflow.model.training.config import TrainConfig
from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.ingest.config import IngestConfig
from bertflow.pipeline.ingest.demo_task import DEMO_TASK
from bertflow.pipeline.shards.config import ShardConfig
from bertflow.pipeline.tokenizer.config import TokenizerConfig

PRESETS = ("demo", "bert-base")
DEMO_VOCAB_SIZE = 8192  # 1.0M of the tiny model's 1.6M parameters (27k pieces: 3.5M of 4.0M)
SST2_ENV = "BERTFLOW_SST2"


def checkout() -> Path | None:
    """The source folder bertflow was installed from in editable mode (`pip install -e`, as the
    Makefile does), as its distribution records it; None for a plain install."""
    # Every record of the name: a checkout's own bertflow.egg-info, on sys.path when Python
    # starts there, has none of pip's.
    for dist in importlib.metadata.distributions(name="bertflow"):
        origin = json.loads(dist.read_text("direct_url.json") or "{}")
        if origin.get("dir_info", {}).get("editable"):
            return Path(urllib.request.url2pathname(urllib.parse.urlparse(origin["url"]).path))
    return None


def shared_sst2() -> Path | None:
    """SST-2 in GLUE layout for the demo's evaluation: `$BERTFLOW_SST2`, else the shared data
    beside the checkout (`../shared/data/sst2`) where there is one."""
    if os.environ.get(SST2_ENV):
        return Path(os.environ[SST2_ENV])
    root = checkout()
    return root.parent / "shared" / "data" / "sst2" if root is not None else None


class Phase(BaseModel):
    """One pretraining phase: shards of one sequence length, and training on them. A phase
    after the first starts from the previous phase's model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shard: ShardConfig = Field(default_factory=ShardConfig, description="Pretraining examples.")
    pretrain: TrainConfig = Field(default_factory=TrainConfig, description="Training.")


class PipelineConfig(BaseModel):
    """Everything one pipeline run does: ingest -> tokenizer -> shard -> pretrain -> evaluate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: str | None = Field(
        None,
        description="Artifact store: a folder or fsspec URL such as s3://bucket/prefix "
        "(default: $BERTFLOW_STORE, else ~/.bertflow/store).",
    )
    corpus_id: str | None = Field(
        None,
        description="Start from this corpus artifact instead of ingesting the sources "
        "(what the event-driven automation passes).",
    )
    ingest: IngestConfig = Field(
        default_factory=lambda: IngestConfig(sources=["demo"]),
        description="Raw text -> corpus.",
    )
    tokenizer: TokenizerConfig = Field(
        default_factory=lambda: TokenizerConfig(vocab_size=DEMO_VOCAB_SIZE),
        description="Corpus -> WordPiece vocabulary.",
    )
    phases: list[Phase] = Field(
        default_factory=lambda: [demo_phase()],
        min_length=1,
        description="Pretraining phases, in order (BERT: 128 tokens, then 512).",
    )
    evaluate: EvaluateConfig = Field(
        default_factory=lambda: demo_evaluation(), description="Model -> evaluation."
    )

    def editable(self) -> dict[str, Any]:
        """The config as a YAML file, `--print-config` and the Prefect form show it: derived
        defaults left empty (`ShardConfig.editable`), so editing a phase's length re-derives
        them."""
        fields = self.model_dump(mode="json")
        fields["phases"] = [
            {**dumped, "shard": phase.shard.editable()}
            for dumped, phase in zip(fields["phases"], self.phases, strict=True)
        ]
        return fields

    @model_validator(mode="after")
    def _phases_chain(self) -> PipelineConfig:
        for i, phase in enumerate(self.phases[1:], start=1):
            if phase.pretrain.init_from is not None:
                raise ValueError(
                    f"phases.{i}.pretrain.init_from: leave it empty; phase {i} starts from "
                    f"phase {i - 1}'s model"
                )
        return self


# -- presets ----------------------------------------------------------------------------------


def demo_phase() -> Phase:
    """The tiny preset for a few minutes of a 2-core CPU, found by measuring (`bench/demo.py`):
    32-token examples, where a 2x128 model leaves the unigram plateau after about 1,000 steps of
    128 (at 128 tokens it was still on it after 4,500 steps of 32); no dropout, which only slows
    a model this far from fitting its data; 2e-3 peak rate. A second phase at 64 tokens (BERT's
    two-phase recipe: 2,400 steps here, then 600 of 64 x 64) lets fine-tuning read twice the
    text (demo-era +0.074 over random init against +0.058) but ended at 0.290 MLM accuracy and
    682 s against 0.304 and 513 s, so the demo keeps one phase."""
    return Phase(
        shard=ShardConfig(max_seq_len=32),
        pretrain=TrainConfig(
            preset="tiny",
            max_steps=3000,
            batch_size=128,
            lr=2e-3,
            warmup_steps=100,
            dropout=0.0,
            val_every=500,
            checkpoint_every=500,
        ),
    )


def demo_evaluation() -> EvaluateConfig:
    """`demo-era`, the built-in task on the speeches the demo corpus holds out (every machine),
    and SST-2 when the shared data is beside the checkout; at most 2000 training examples each,
    5 seeds (3 for SST-2), both baselines: about a minute and a half on a 2-core CPU."""
    tasks = [TaskSpec(path=DEMO_TASK)]
    sst2 = shared_sst2()
    if sst2 is not None and (sst2 / "train.tsv").exists():
        tasks.append(TaskSpec(path=str(sst2), seeds=3))
    return EvaluateConfig(tasks=tasks, max_train_examples=2000)


def demo() -> PipelineConfig:
    return PipelineConfig()


def bert_base(sources: list[str] | None = None) -> PipelineConfig:
    """BERT-base as published (Devlin et al. 2019): uncased 30522 WordPiece; 90% of the steps
    at 128 tokens (20 predictions), 10% at 512 (77 predictions); batch 256, Adam at 1e-4 with
    10k warm-up steps and linear decay, dropout 0.1; fine-tuned at 2e-5..5e-5 for 3 epochs.
    Replace the sources with your corpus (`--print-config` writes this as YAML to edit)."""
    phase = dict(
        preset="base",
        batch_size=256,
        lr=1e-4,
        max_position_embeddings=512,
        precision="auto",
        num_workers=4,
        log_every=100,
        val_every=10_000,
        checkpoint_every=10_000,
    )
    return PipelineConfig(
        ingest=IngestConfig(sources=sources or ["demo"]),
        tokenizer=TokenizerConfig(vocab_size=30522, lowercase=True),
        phases=[
            Phase(
                shard=ShardConfig(max_seq_len=128, max_predictions=20, num_shards=256),
                pretrain=TrainConfig(**phase, max_steps=900_000, warmup_steps=10_000),
            ),
            Phase(
                shard=ShardConfig(max_seq_len=512, max_predictions=77, num_shards=256),
                pretrain=TrainConfig(**phase, max_steps=100_000, warmup_steps=1_000),
            ),
        ],
        evaluate=EvaluateConfig(tasks=demo_evaluation().tasks, lr=3e-5, epochs=3, batch_size=32),
    )


def preset(name: str) -> PipelineConfig:
    if name == "demo":
        return demo()
    if name == "bert-base":
        return bert_base()
    raise InputError(f"unknown pipeline preset {name!r}; choose one of {', '.join(PRESETS)}")


# -- YAML -------------------------------------------------------------------------------------


def load_config(path: Path, base: PipelineConfig | None = None) -> PipelineConfig:
    """A config from YAML; sections and fields it leaves out keep `base`'s (default: demo).
    Errors name the file and the field."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such config file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid YAML ({e})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of sections (ingest, tokenizer, ...)")
    merged = _merge((base or demo()).editable(), data)
    try:
        return PipelineConfig.model_validate(merged)
    except ValidationError as e:
        raise InputError(f"{path}: invalid config\n{describe_fields(e)}") from None


def describe_fields(error: ValidationError) -> str:
    """`section.field: problem` lines."""
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        lines.append(f"  {where}: {item['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def to_yaml(config: PipelineConfig) -> str:
    return yaml.safe_dump(config.editable(), sort_keys=False)


def _merge(base: Any, override: Any, key: str | None = None) -> Any:
    """Override's values over base's, field by field. Lists are replaced whole, except phases:
    phase i merges onto the base's phase i (or its last), so a YAML file can change one field
    of a phase."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{k: _merge(base.get(k), v, k) for k, v in override.items()}}
    if key == "phases" and isinstance(base, list) and base and isinstance(override, list):
        return [_merge(base[min(i, len(base) - 1)], item) for i, item in enumerate(override)]
    return override
