"""`bertflow export`: a folder transformers loads, giving our logits, and that fine-tunes."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer

from bertflow.flows.cli import main
from bertflow.model.bert import BertConfig, BertForPreTraining
from bertflow.model.export import EXPORT_FILES
from bertflow.pipeline.store import ArtifactStore

transformers = pytest.importorskip("transformers")

SENTENCES = [
    ("The union is strong and our economy grows.", "Congress must act."),
    ("We shall never forget the brave.", "Peace is our goal, and our duty, in every land."),
]


@pytest.fixture(scope="module")
def exported(tiny_shards, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    assert main(["--store", tiny_shards.store_url, "export", tiny_model, "--out", str(out)]) == 0
    return out


def ours_from_checkpoint(store: ArtifactStore, model_id: str) -> BertForPreTraining:
    """Our model with the weights of the artifact's Lightning checkpoint (not the export)."""
    manifest = store.require(model_id)
    model = BertForPreTraining(BertConfig(**manifest.layout["architecture"]))
    ckpt = torch.load(store.local_path(model_id) / "checkpoint/last.ckpt", weights_only=False)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    model.load_state_dict(state)
    return model.eval()


def test_export_writes_the_files_transformers_needs(exported):
    assert sorted(p.name for p in exported.iterdir()) == sorted(EXPORT_FILES)
    config = json.loads((exported / "config.json").read_text())
    assert config["model_type"] == "bert" and config["vocab_size"] == 2000


def test_transformers_loads_it_with_no_missing_keys_and_gives_our_logits(
    tiny_shards, tiny_model, exported
):
    hf, info = transformers.BertForPreTraining.from_pretrained(exported, output_loading_info=True)
    assert not info["missing_keys"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    hf.eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    batch = tokenizer(
        [a for a, _ in SENTENCES], [b for _, b in SENTENCES], padding=True, return_tensors="pt"
    )
    ours = ours_from_checkpoint(ArtifactStore(tiny_shards.store_url), tiny_model)
    with torch.no_grad():
        theirs = hf(**batch)
        mine = ours(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    mask = batch["attention_mask"].bool()  # padding positions are not compared
    torch.testing.assert_close(
        mine.mlm_logits[mask], theirs.prediction_logits[mask], atol=1e-4, rtol=0
    )
    torch.testing.assert_close(mine.nsp_logits, theirs.seq_relationship_logits, atol=1e-4, rtol=0)


def test_auto_tokenizer_encodes_as_the_tokenizer_artifact(tiny_shards, exported):
    store = ArtifactStore(tiny_shards.store_url)
    ours = Tokenizer.from_file(str(store.local_path(tiny_shards.tokenizer_id) / "tokenizer.json"))
    theirs = transformers.AutoTokenizer.from_pretrained(exported)
    for a, b in SENTENCES:
        expected = ours.encode(a, b)
        got = theirs(a, b)
        assert got["input_ids"] == expected.ids
        assert got["token_type_ids"] == expected.type_ids
    assert theirs.model_max_length == 512


def test_sequence_classification_loads_and_fine_tunes(exported):
    model = transformers.BertForSequenceClassification.from_pretrained(exported, num_labels=2)
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    batch = tokenizer([a for a, _ in SENTENCES], padding=True, return_tensors="pt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    labels = torch.tensor([0, 1])
    losses = []
    for _ in range(5):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    encoder = transformers.BertModel.from_pretrained(exported)
    assert encoder.embeddings.word_embeddings.weight.shape == (2000, 128)


def test_export_of_an_id_that_is_not_a_model_fails_clearly(tiny_shards, tmp_path, capsys):
    code = main(["--store", tiny_shards.store_url, "export", tiny_shards.shards_id,
                 "--out", str(tmp_path / "x")])  # fmt: skip
    assert code == 1
    assert "shards" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
