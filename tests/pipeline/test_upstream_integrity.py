"""Every stage checks the upstream files it reads against their manifests before it builds: a file
changed after publishing (same size, other bytes; or bytes appended) is refused with an error
naming the artifact and the file, and nothing is published."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bertflow.pipeline.core.store import ArtifactChanged, ArtifactStore

pytestmark = pytest.mark.usefixtures("prefect_server")


def copied(store_url: str, tmp_path: Path) -> ArtifactStore:
    """A private copy of a session store, so a test can damage it."""
    shutil.copytree(store_url, tmp_path / "store")
    return ArtifactStore(str(tmp_path / "store"))


def damage(store: ArtifactStore, artifact_id: str, relpath: str, how: str) -> None:
    path = store.local_path(artifact_id) / relpath
    data = bytearray(path.read_bytes())
    if how == "replaced":  # the same size, other content
        data[len(data) // 2] ^= 0xFF
    else:
        data += b"appended"
    path.write_bytes(bytes(data))


def kinds_in(store: ArtifactStore) -> dict[str, int]:
    return {kind: len(store.list(kind)) for kind in ("tokenizer", "shards", "model", "evaluation")}


@pytest.mark.parametrize("how", ["replaced", "appended"])
def test_a_tokenizer_from_a_changed_corpus_is_refused_naming_both(tiny_shards, tmp_path, how):
    from bertflow.pipeline.tokenizer.stage import TokenizerConfig, make_tokenizer

    store = copied(tiny_shards.store_url, tmp_path)
    damage(store, tiny_shards.corpus_id, "train/part-00000.parquet", how)
    before = kinds_in(store)
    with pytest.raises(ArtifactChanged) as raised:
        make_tokenizer(store, tiny_shards.corpus_id, TokenizerConfig(vocab_size=1000))
    message = str(raised.value)
    assert tiny_shards.corpus_id in message and "train/part-00000.parquet" in message
    assert ("content changed" if how == "replaced" else "size") in message
    assert kinds_in(store) == before


def test_the_shard_command_on_a_changed_corpus_exits_with_an_error_line(
    tiny_shards, tmp_path, capsys
):
    from bertflow.flows.cli import main

    store = copied(tiny_shards.store_url, tmp_path)
    damage(store, tiny_shards.corpus_id, "validation/part-00000.parquet", "appended")
    before = kinds_in(store)
    code = main(
        [
            "shard",
            "--store",
            store.url,
            "--corpus",
            tiny_shards.corpus_id,
            "--tokenizer",
            tiny_shards.tokenizer_id,
            "--max-seq-len",
            "48",
            "--workers",
            "1",
        ]
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after Prefect's own run logs
    assert code == 1
    assert last.startswith("bertflow shard: error: corpus " + tiny_shards.corpus_id)
    assert "validation/part-00000.parquet: size " in last
    assert kinds_in(store) == before


def test_shards_from_a_changed_tokenizer_are_refused(tiny_shards, tmp_path):
    from bertflow.pipeline.shards.stage import ShardConfig, make_shards

    store = copied(tiny_shards.store_url, tmp_path)
    damage(store, tiny_shards.tokenizer_id, "vocab.txt", "replaced")
    before = store.list("shards")
    with pytest.raises(ArtifactChanged, match=f"tokenizer {tiny_shards.tokenizer_id}.*vocab.txt"):
        make_shards(
            store,
            tiny_shards.corpus_id,
            tiny_shards.tokenizer_id,
            ShardConfig(max_seq_len=48, num_shards=2, num_validation_shards=1, workers=1),
        )
    assert store.list("shards") == before


def test_training_on_changed_shards_stops_before_the_first_step(
    tiny_shards, tmp_path, training_config
):
    from bertflow.model.training.plan import plan_pretrain
    from bertflow.model.training.train import train

    store = copied(tiny_shards.store_url, tmp_path)
    shard = store.require(tiny_shards.shards_id).layout["splits"]["train"][1]["path"]
    damage(store, tiny_shards.shards_id, shard, "replaced")
    plan = plan_pretrain(store, tiny_shards.shards_id, training_config(max_steps=2))
    before = store.list("model")  # the session's store holds other tests' models
    with pytest.raises(ArtifactChanged, match=f"shards {tiny_shards.shards_id}.*{shard}"):
        train(store, plan, tmp_path / "run")
    assert store.list("model") == before
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_evaluating_and_exporting_a_changed_model_are_refused(
    tiny_shards, tiny_model, tmp_path, capsys
):
    from bertflow.flows.cli import main
    from bertflow.model.evaluation.stage import EvaluateConfig, build_and_publish, plan_evaluation

    store = copied(tiny_shards.store_url, tmp_path)
    damage(store, tiny_model, "hf/model.safetensors", "replaced")
    plan = plan_evaluation(store, tiny_model, EvaluateConfig(tasks=[], device="cpu"))
    before = store.list("evaluation")
    with pytest.raises(ArtifactChanged, match=f"model {tiny_model}.*hf/model.safetensors"):
        build_and_publish(store, plan)
    assert store.list("evaluation") == before

    out = tmp_path / "export"
    assert main(["export", "--store", store.url, "--out", str(out), tiny_model]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"bertflow export: error: model {tiny_model}")
    assert "hf/model.safetensors: content changed" in err
    assert not out.exists()
