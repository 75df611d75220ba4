"""HuggingFace export: a folder `transformers` loads as `BertForPreTraining` and `AutoTokenizer`,
and the one loader of such a folder back into our model (from a path or a store artifact).

Written by hand (safetensors + JSON) rather than through `transformers`, so training and export
need no `transformers` import; the tests load the folder with `transformers` and compare logits.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from bertflow.model.bert import BertConfig, BertForPreTraining, hf_state_dict, load_hf_state_dict
from bertflow.pipeline.core.store import ArtifactStore

Read = Callable[[str], bytes]
"""An export's file by name: a folder's or a store artifact's."""

TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
EXPORT_FILES = (CONFIG_FILE, WEIGHTS_FILE, *TOKENIZER_FILES)


def hf_config(config: BertConfig, pad_token_id: int = 0) -> dict:
    """`config.json` for `transformers.BertConfig`."""
    return {
        "architectures": ["BertForPreTraining"],
        "model_type": "bert",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": config.hidden_dropout,
        "attention_probs_dropout_prob": config.attention_dropout,
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size,
        "initializer_range": config.initializer_range,
        "layer_norm_eps": config.layer_norm_eps,
        "pad_token_id": pad_token_id,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
        "dtype": "float32",
    }


def config_from_hf(data: dict) -> BertConfig:
    """Our config from a `config.json` written by `hf_config` (or any BERT one)."""
    return BertConfig(
        vocab_size=data["vocab_size"],
        hidden_size=data["hidden_size"],
        num_layers=data["num_hidden_layers"],
        num_heads=data["num_attention_heads"],
        intermediate_size=data["intermediate_size"],
        max_position_embeddings=data["max_position_embeddings"],
        type_vocab_size=data.get("type_vocab_size", 2),
        hidden_dropout=data.get("hidden_dropout_prob", 0.1),
        attention_dropout=data.get("attention_probs_dropout_prob", 0.1),
        layer_norm_eps=data.get("layer_norm_eps", 1e-12),
        initializer_range=data.get("initializer_range", 0.02),
    )


def export_hf(model: BertForPreTraining, tokenizer_dir: Path, out: Path) -> list[str]:
    """Write config, fp32 weights and the tokenizer files into `out`; returns the file names."""
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.float() for k, v in hf_state_dict(model).items()}
    save_file(weights, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    (out / CONFIG_FILE).write_text(json.dumps(hf_config(model.config), indent=2) + "\n")
    for name in TOKENIZER_FILES:
        shutil.copyfile(tokenizer_dir / name, out / name)
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    tokenizer_config["model_max_length"] = model.config.max_position_embeddings
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    return list(EXPORT_FILES)


def folder_files(folder: Path) -> Read:
    return lambda name: (folder / name).read_bytes()


def artifact_files(store: ArtifactStore, artifact_id: str, folder: str) -> Read:
    """The files of the export under `folder` of a store artifact (a model's `hf`)."""

    def read(name: str) -> bytes:
        with store.open(artifact_id, f"{folder}/{name}") as f:
            return f.read()

    return read


def read_export(read: Read) -> tuple[BertConfig, dict[str, torch.Tensor]]:
    """The architecture and the weights (HuggingFace names) of an export."""
    config = config_from_hf(json.loads(read(CONFIG_FILE)))
    return config, load_safetensors(read(WEIGHTS_FILE))


def load_export(read: Read) -> BertForPreTraining:
    """Our model from an export (or any HuggingFace BERT checkpoint in safetensors)."""
    config, state = read_export(read)
    model = BertForPreTraining(config)
    load_hf_state_dict(model, state)
    return model
