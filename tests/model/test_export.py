"""`bertflow export`: a folder transformers loads, giving our logits, and that fine-tunes; its
model card, read from the lineage and the latest evaluation."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from tokenizers import Tokenizer
from toy_task import write_toy_task

from bertflow.flows.cli import main
from bertflow.model.bert import BertConfig, BertForPreTraining
from bertflow.model.evaluation.stage import EvaluateConfig, run_evaluation
from bertflow.model.evaluation.task_spec import TaskSpec
from bertflow.model.export import EXPORT_FILES
from bertflow.model.metric_format import fmt
from bertflow.model.model_card import MODEL_CARD_FILE
from bertflow.pipeline.core.store import ArtifactStore

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
    assert sorted(p.name for p in exported.iterdir()) == sorted([*EXPORT_FILES, MODEL_CARD_FILE])
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
    code = main(
        [
            "--store",
            tiny_shards.store_url,
            "export",
            tiny_shards.shards_id,
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == 1
    assert "shards" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# -- the model card ---------------------------------------------------------------------------


def front_matter(card: str) -> dict:
    """The YAML between the card's opening `---` lines, as the Hub reads it."""
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.fixture(scope="module")
def evaluated_export(tiny_shards, tiny_model, tmp_path_factory):
    """(store, evaluation, folder): the tiny model evaluated in a copy of its store (so this is
    its latest evaluation), then exported."""
    folder = tmp_path_factory.mktemp("card")
    shutil.copytree(
        ArtifactStore(tiny_shards.store_url).root,
        folder / "store",
        ignore=shutil.ignore_patterns("evaluation", ".staging", ".locks"),
    )
    store = ArtifactStore(str(folder / "store"))
    task = write_toy_task(folder / "task.jsonl", 60)
    config = EvaluateConfig(
        tasks=[TaskSpec(path=str(task), name="era", seeds=2)],
        epochs=1,
        batch_size=16,
        baselines=["tfidf"],
        intrinsic_max_batches=1,
        max_seq_len=32,
        device="cpu",
    )
    evaluation = run_evaluation(store, tiny_model, config).manifest
    out = folder / "export"
    assert main(["--store", store.url, "export", tiny_model, "--out", str(out)]) == 0
    return store, evaluation, out


def test_the_card_carries_hub_metadata_and_the_evaluations_scores(evaluated_export, tiny_model):
    store, evaluation, out = evaluated_export
    card = (out / MODEL_CARD_FILE).read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "fill-mask"
    assert {"bert", "nsp"} <= set(meta["tags"])
    [index] = meta["model-index"]
    assert index["name"] == tiny_model
    by_task = {r["dataset"]["name"]: r for r in index["results"]}
    era = evaluation.stats["tasks"]["era"]
    assert by_task["era"]["dataset"]["split"] == era["evaluation_split"]
    assert {m["type"]: m["value"] for m in by_task["era"]["metrics"]} == {
        metric: era["model"][metric]["median"] for metric in era["metrics"]
    }
    [intrinsic] = [r for r in index["results"] if r["task"]["type"] == "fill-mask"]
    assert {m["type"]: m["value"] for m in intrinsic["metrics"]}["mlm_acc"] == (
        evaluation.stats["intrinsic"]["mlm_acc"]
    )
    # the body: the evaluation's scores beside its baseline, and which evaluation they are
    accuracy, tfidf = era["model"]["accuracy"], era["baselines"]["tfidf"]["accuracy"]
    assert evaluation.id in card
    assert f"{fmt(accuracy['mean'])} ± {fmt(accuracy['std'])} | {fmt(tfidf['median'])} |" in card


def test_the_card_names_the_lineage_with_the_sizes_its_manifests_record(
    evaluated_export, tiny_model, tiny_shards
):
    store, _, out = evaluated_export
    card = (out / MODEL_CARD_FILE).read_text()
    model, shards = store.require(tiny_model), store.require(tiny_shards.shards_id)
    corpus = store.require(tiny_shards.corpus_id)
    tokenizer = store.require(tiny_shards.tokenizer_id)
    assert f"`{corpus.id}` | {corpus.stats['documents']['train']:,} train" in card
    assert f"{corpus.stats['input_bytes']:,} input bytes" in card
    assert f"`{tokenizer.id}` | WordPiece, {tokenizer.stats['vocab_size']:,} tokens" in card
    train = shards.stats["train"]
    assert f"`{shards.id}` | {train['examples']:,} train examples ({train['tokens']:,} " in card
    arch = model.layout["architecture"]
    assert f"preset `tiny`: {arch['num_layers']} layers, hidden {arch['hidden_size']}" in card
    assert f"{model.stats['parameters']:,} parameters" in card
    assert f"at most {shards.layout['max_seq_len']} tokens" in card
    s = model.stats
    tokens = round(s["examples_seen"] * train["tokens"] / train["examples"])
    assert (
        f"| 1 | `{model.id}` | `{shards.id}` | {s['device']} | {s['steps']:,} | "
        f"{s['global_batch']:,} | {s['examples_seen']:,} | {tokens:,} |"
    ) in card


def test_transformers_still_loads_the_folder_with_its_card(evaluated_export):
    _, _, out = evaluated_export
    encoder = transformers.AutoModel.from_pretrained(out)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    batch = tokenizer(["the nation saw peace"], return_tensors="pt")
    with torch.no_grad():
        assert encoder(**batch).last_hidden_state.shape[-1] == 128


def test_the_model_artifact_holds_a_card_without_evaluation(tiny_shards, tiny_model):
    """Written when the model was published, before any evaluation could exist."""
    store = ArtifactStore(tiny_shards.store_url)
    card = (store.local_path(tiny_model) / "hf" / MODEL_CARD_FILE).read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "transformers" and "model-index" not in meta
    assert tiny_shards.shards_id in card and tiny_shards.corpus_id in card
    assert "No evaluation of this model" in card
