"""The evaluation stage without Prefect: intrinsic metrics on a tiny trained model, fine-tuned tasks
beside their baselines, the artifact's files and report, comparisons, and bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from bertflow.model.evaluation.baselines import tfidf_baseline
from bertflow.model.evaluation.config import default_seed_count
from bertflow.model.evaluation.finetune import best_epoch
from bertflow.model.evaluation.intrinsic import intrinsic_metrics, validation_dataset
from bertflow.model.evaluation.metrics import HIGHER_IS_BETTER
from bertflow.model.evaluation.report import (
    changes,
    comparison_table,
    metric_rows,
    previous_evaluation,
    render_text_table,
)
from bertflow.model.evaluation.stage import (
    EvaluateConfig,
    build_and_publish,
    dev_split,
    load_pretrained,
    plan_evaluation,
    run_evaluation,
    training_sample,
)
from bertflow.model.evaluation.task_data import TaskSplit
from bertflow.model.evaluation.task_spec import TaskSpec
from bertflow.model.evaluation.tasks import read_task
from bertflow.model.metric_format import fmt
from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.store import ArtifactStore, StoreError

SST2 = Path(__file__).resolve().parents[3] / "shared" / "data" / "sst2"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
POSITIVE = ["peace", "freedom", "growth", "prosperity", "hope", "success"]
NEGATIVE = ["war", "debt", "crisis", "depression", "fear", "failure"]
FILLER = ["the", "nation", "people", "congress", "year", "states", "government", "our"]


def sentiment_csv(path: Path, n: int, seed: int) -> Path:
    """A two-class task the tiny model can learn: the label is which word list a sentence uses."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence", "sentiment"])
        for _ in range(n):
            label = int(rng.integers(2))
            cue = POSITIVE if label else NEGATIVE
            words = list(rng.choice(FILLER, 5)) + list(rng.choice(cue, 2))
            rng.shuffle(words)
            writer.writerow([" ".join(words), "pos" if label else "neg"])
    return path


def similarity_jsonl(path: Path, n: int, seed: int, long_every: int = 0) -> Path:
    """Sentence pairs scored by how many words they share (a regression task)."""
    rng = np.random.default_rng(seed)
    vocabulary = POSITIVE + NEGATIVE + FILLER
    with open(path, "w") as f:
        for i in range(n):
            a = list(rng.choice(vocabulary, 6, replace=False))
            shared = int(rng.integers(0, 6))
            b = a[:shared] + [w for w in rng.choice(vocabulary, 6) if w not in a][: 6 - shared]
            text = " ".join(a) + (" the" * 300 if long_every and i % long_every == 0 else "")
            record = {"text": text, "text_pair": " ".join(b), "label": shared / 1.2}
            f.write(json.dumps(record) + "\n")
    return path


def quick(**changes) -> EvaluateConfig:
    fields = dict(seeds=2, epochs=4, batch_size=16, lr=1e-3, device="cpu", max_seq_len=48)
    return EvaluateConfig(**{**fields, **changes})


# -- intrinsic --------------------------------------------------------------------------------


def test_intrinsic_metrics_equal_the_models_own_final_validation(tiny_shards, tiny_model):
    """Training validated the first 4 batches of 16 at the fixed seed; so must we, exactly."""
    store = ArtifactStore(tiny_shards.store_url)
    manifest = store.require(tiny_model)
    network, _ = load_pretrained(store, manifest)
    dataset = validation_dataset(store, tiny_shards.shards_id, batch_size=16)
    ours = intrinsic_metrics(
        network, dataset, nsp=True, device=__import__("torch").device("cpu"), max_batches=4
    )
    theirs = manifest.stats["validation"]
    assert ours["examples"] == theirs["examples"] == 64
    for key in ("mlm_loss", "mlm_acc", "nsp_acc", "perplexity"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-4), key


def test_intrinsic_metrics_do_not_depend_on_the_batch_size(tiny_shards, tiny_model):
    import torch

    store = ArtifactStore(tiny_shards.store_url)
    network, _ = load_pretrained(store, store.require(tiny_model))
    results = [
        intrinsic_metrics(
            network,
            validation_dataset(store, tiny_shards.shards_id, size),
            nsp=True,
            device=torch.device("cpu"),
        )
        for size in (8, 64)
    ]
    total = store.require(tiny_shards.shards_id).stats["validation"]["examples"]
    assert results[0]["examples"] == results[1]["examples"] == total
    assert results[0]["masked_tokens"] == results[1]["masked_tokens"] > 0
    for key in ("mlm_loss", "mlm_acc", "nsp_acc"):
        assert results[0][key] == pytest.approx(results[1][key], rel=1e-5)


# -- a whole evaluation -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated(tiny_shards, tiny_model, tmp_path_factory):
    """One evaluation of a classification and a pair-regression task, and the store it is in."""
    folder = tmp_path_factory.mktemp("tasks")
    tasks = [
        TaskSpec(
            path=str(sentiment_csv(folder / "sentiment.csv", 240, seed=1)),
            text_field="sentence",
            label_field="sentiment",
        ),
        TaskSpec(path=str(similarity_jsonl(folder / "overlap.jsonl", 200, seed=2, long_every=20))),
    ]
    store = ArtifactStore(tiny_shards.store_url)
    config = quick(tasks=tasks)
    published = run_evaluation(store, tiny_model, config)
    return store, published.manifest, config


def test_evaluation_reports_every_metric_with_its_spread_and_baselines(evaluated, tiny_model):
    store, manifest, config = evaluated
    assert manifest.kind == "evaluation" and manifest.upstream == {"model": tiny_model}
    stats = manifest.stats
    assert [t["seeds"] for t in stats["tasks"].values()] == [[0, 1], [0, 1]]
    assert {"mlm_loss", "mlm_acc", "perplexity", "nsp_acc", "examples"} <= stats["intrinsic"].keys()

    sentiment = stats["tasks"]["sentiment"]
    assert sentiment["problem"] == "classification" and sentiment["label_names"] == ["neg", "pos"]
    assert sentiment["metrics"] == ["accuracy", "f1"]
    assert sentiment["examples"] == {"train": 192, "evaluation": 48}  # a seeded 20% split
    accuracy = sentiment["model"]["accuracy"]
    assert len(accuracy["runs"]) == 2
    assert accuracy["min"] <= accuracy["median"] <= accuracy["max"]
    assert accuracy["median"] > 0.75  # the words decide the label: pretrained or not, it learns
    assert set(sentiment["baselines"]) == {"tfidf", "random-init"}
    assert len(sentiment["baselines"]["tfidf"]["accuracy"]["runs"]) == 1
    assert sentiment["baselines"]["tfidf"]["accuracy"]["median"] > 0.9

    overlap = stats["tasks"]["overlap"]
    assert overlap["problem"] == "regression" and overlap["num_labels"] == 1
    assert overlap["metrics"] == ["pearson", "spearman", "mse"]
    assert -1 <= overlap["model"]["pearson"]["median"] <= 1
    assert overlap["baselines"]["tfidf"]["pearson"]["median"] > 0.5


def test_too_long_inputs_are_truncated_and_counted(evaluated):
    _, manifest, _ = evaluated
    overlap = manifest.stats["tasks"]["overlap"]
    # every 20th of 200 rows carries 300 extra words; the seeded splits decide which side each is
    assert sum(overlap["truncated"].values()) == 10
    assert set(overlap["truncated"]) == {"train", "dev", "evaluation"}
    assert any("truncated" in w and w.startswith("overlap:") for w in manifest.stats["warnings"])
    assert manifest.stats["tasks"]["sentiment"]["truncated"] == {
        "train": 0,
        "dev": 0,
        "evaluation": 0,
    }


def test_artifact_holds_results_report_with_lineage_and_curves(evaluated, tiny_shards):
    store, manifest, _ = evaluated
    folder = store.local_path(manifest.id)
    assert {f.path for f in manifest.files} == {"results.json", "report.md", "curves.png"}
    assert (folder / "curves.png").read_bytes()[:8] == PNG_SIGNATURE
    results = json.loads((folder / "results.json").read_text())
    assert results["tasks"] == manifest.stats["tasks"]
    assert len(results["curves"]["sentiment"]["pretrained"]) == 2  # a loss curve per seed
    assert len(results["epoch_scores"]["sentiment"]["random-init"][0]) == 4  # one per epoch
    selection = manifest.stats["tasks"]["sentiment"]["selection"]
    assert results["epoch_scores"]["sentiment"] == selection["dev_scores"]  # what chose epochs
    report = (folder / "report.md").read_text()
    for upstream in (tiny_shards.corpus_id, tiny_shards.tokenizer_id, tiny_shards.shards_id):
        assert upstream in report
    assert "| sentiment | test (48) | accuracy |" in report
    assert "TF-IDF" in report and "random init" in report
    assert "preset tiny" in report  # the training recipe


def test_every_summary_has_the_mean_and_std_of_its_runs_and_every_report_shows_them(evaluated):
    store, manifest, _ = evaluated
    for task in manifest.stats["tasks"].values():
        for summaries in (task["model"], *task["baselines"].values()):
            for summary in summaries.values():
                assert summary["median"] == pytest.approx(np.median(summary["runs"]))
                assert summary["mean"] == pytest.approx(np.mean(summary["runs"]))
                assert summary["std"] == pytest.approx(np.std(summary["runs"]))
    a = manifest.stats["tasks"]["sentiment"]["model"]["accuracy"]
    beside = f"{fmt(a['mean'])} ± {fmt(a['std'])}"
    report = (store.local_path(manifest.id) / "report.md").read_text()
    cell = f"{fmt(a['median'])} ({fmt(a['min'])}–{fmt(a['max'])}), {beside}"
    assert f"| sentiment | test (48) | accuracy | 2 | {cell} |" in report
    _, rows = comparison_table(
        [manifest]
    )  # `evaluate compare`, and `show`'s table beside the previous
    assert ["sentiment accuracy", cell] in rows
    [row] = [
        r
        for r in metric_rows(manifest.stats)
        if r["task"] == "sentiment" and r["metric"] == "accuracy"
    ]
    assert (row["pretrained"], row["mean"], row["std"]) == (
        fmt(a["median"]),
        fmt(a["mean"]),
        fmt(a["std"]),
    )


def test_each_run_keeps_its_best_epoch_on_a_dev_split_held_out_of_training(evaluated):
    store, manifest, _ = evaluated
    for task in manifest.stats["tasks"].values():
        assert task["dev"]["origin"] == "train"
        assert task["dev"]["examples"] + task["trained_on"] == task["examples"]["train"]
        assert task["dev"]["examples"] == pytest.approx(0.1 * task["examples"]["train"], abs=2)
        selection, higher = task["selection"], HIGHER_IS_BETTER[task["primary"]]
        assert selection["by"] == f"best dev {task['primary']}"
        for label in ("pretrained", "random-init"):
            curves, kept = selection["dev_scores"][label], selection["epochs"][label]
            assert len(kept) == 2 and [len(c) for c in curves] == [4, 4]
            assert kept == [best_epoch(c, higher) for c in curves]
    report = (store.local_path(manifest.id) / "report.md").read_text()
    kept = manifest.stats["tasks"]["sentiment"]["selection"]["epochs"]["pretrained"]
    assert f"Epochs kept: pretrained {', '.join(map(str, kept))};" in report


def test_the_dev_split_is_seeded_stratified_and_apart_from_training():
    labels = np.array([0] * 50 + [1] * 24 + [2] * 3 + [3])
    split = TaskSplit([f"t{i}" for i in range(len(labels))], None, labels, "x.csv")
    train, dev = dev_split(split, "classification", 0.1, seed=0)
    assert dev is not None and dev_split(split, "classification", 0.1, seed=0)[1].texts == dev.texts
    assert dev_split(split, "classification", 0.1, seed=1)[1].texts != dev.texts
    assert not set(train.texts) & set(dev.texts)
    assert sorted(train.texts + dev.texts) == sorted(split.texts)
    assert dev.texts == [t for t in split.texts if t in set(dev.texts)]  # file order
    # 10% of each class, at least one of a class of two or more, none of a lone example
    assert [int(np.sum(dev.labels == c)) for c in range(4)] == [5, 2, 1, 0]
    assert [int(np.sum(train.labels == c)) for c in range(4)] == [45, 22, 2, 1]
    scores = TaskSplit([f"t{i}" for i in range(30)], None, np.linspace(0, 1, 30), "y.csv")
    assert len(dev_split(scores, "regression", 0.1, seed=0)[1]) == 3
    assert dev_split(scores, "regression", 0.0, seed=0) == (scores, None)


def test_each_task_runs_its_own_seed_count_else_the_default_for_its_size(
    tiny_shards, tiny_model, tmp_path
):
    path = str(sentiment_csv(tmp_path / "small.csv", 60, seed=3))
    fields = dict(path=path, text_field="sentence", label_field="sentiment")
    tasks = [TaskSpec(**fields, name="two", seeds=2), TaskSpec(**fields, name="by-size")]
    config = quick(tasks=tasks, seeds=None, epochs=1, baselines=["tfidf"], intrinsic=False)
    stats = run_evaluation(ArtifactStore(tiny_shards.store_url), tiny_model, config).manifest.stats
    two, by_size = stats["tasks"]["two"], stats["tasks"]["by-size"]
    assert len(two["model"]["accuracy"]["runs"]) == 2 and two["seeds"] == [0, 1]
    assert default_seed_count(by_size["trained_on"]) == 5  # 43 examples: a small task
    assert len(by_size["model"]["accuracy"]["runs"]) == 5 and by_size["seeds"] == [0, 1, 2, 3, 4]
    # A count for the whole evaluation applies to every task that sets none.
    assert len(EvaluateConfig(seeds=3).task_seeds(tasks[1], 43)) == 3
    assert len(EvaluateConfig(seeds=3).task_seeds(tasks[0], 43)) == 2


def test_default_seed_counts_are_mosaicberts_on_glue():
    """MosaicBERT fine-tunes RTE, MRPC and STS-B with 5 seeds, SST-2 with 3, the rest with 1."""
    train_examples = {
        "rte": 2_490,
        "mrpc": 3_668,
        "stsb": 5_749,
        "sst2": 67_349,
        "qnli": 104_743,
        "qqp": 363_846,
        "mnli": 392_702,
    }
    seeds = {task: default_seed_count(n) for task, n in train_examples.items()}
    assert seeds == {"rte": 5, "mrpc": 5, "stsb": 5, "sst2": 3, "qnli": 1, "qqp": 1, "mnli": 1}


def test_evaluation_is_cached_and_byte_identical_when_rerun_elsewhere(
    evaluated, tiny_model, tmp_path
):
    store, manifest, config = evaluated
    assert run_evaluation(store, tiny_model, config).cached
    copy = tmp_path / "store"
    shutil.copytree(
        store.local_path(tiny_model).parents[1],
        copy,
        ignore=shutil.ignore_patterns("evaluation", ".staging", ".locks"),
    )
    other = ArtifactStore(str(copy))
    again = build_and_publish(other, plan_evaluation(other, tiny_model, config)).manifest
    assert again.id == manifest.id
    assert [(f.path, f.sha256) for f in again.files] == [(f.path, f.sha256) for f in manifest.files]


def test_comparison_with_the_previous_evaluation_of_the_same_tasks(evaluated, tiny_model):
    store, first, config = evaluated
    second = run_evaluation(store, tiny_model, config.model_copy(update={"seed": 5})).manifest
    assert second.id != first.id and second.layout["task_set"] == first.layout["task_set"]
    assert previous_evaluation(store, second).id == first.id
    assert previous_evaluation(store, first) is None
    found = {c.metric: c for c in changes(first, second)}
    accuracy = found["sentiment accuracy"]
    assert accuracy.before == first.stats["tasks"]["sentiment"]["model"]["accuracy"]["median"]
    assert accuracy.after == second.stats["tasks"]["sentiment"]["model"]["accuracy"]["median"]
    assert found["intrinsic MLM loss"].delta == 0  # the same model on the same shards
    assert found["intrinsic MLM loss"].verdict == "unchanged"

    header, rows = comparison_table([first, second])
    assert header == ["metric", first.id, second.id]
    table = render_text_table(header, rows)
    assert "sentiment accuracy" in table and "overlap pearson" in table


# -- real data --------------------------------------------------------------------------------


@pytest.mark.skipif(not SST2.exists(), reason="../shared/data/sst2 is not here")
def test_sst2_from_its_glue_folder_reports_test_accuracy(tiny_shards, tiny_model):
    store = ArtifactStore(tiny_shards.store_url)
    config = quick(
        tasks=[TaskSpec(path=str(SST2))],
        seeds=1,
        epochs=1,
        max_train_examples=1500,
        baselines=["tfidf"],
        intrinsic=False,
    )
    sst2 = run_evaluation(store, tiny_model, config).manifest.stats["tasks"]["sst2"]
    assert sst2["evaluation_split"] == "test" and sst2["split_origin"] == "files"
    assert sst2["examples"] == {"train": 6920, "evaluation": 1821}
    task = read_task(TaskSpec(path=str(SST2)))
    train = training_sample(task.train, 1500, config.seed)
    # GLUE's dev.tsv chooses the epochs, so the model and the TF-IDF baseline alike train on the
    # whole sample
    assert task.dev is not None and sst2["dev"] == {"origin": "files", "examples": len(task.dev)}
    assert sst2["trained_on"] == len(train) == 1500
    alone = tfidf_baseline(
        train.texts,
        None,
        train.labels,
        task.evaluation.texts,
        None,
        "classification",
        seed=config.seed,
    )
    expected = float(np.mean(alone.predictions == task.evaluation.labels))
    assert sst2["baselines"]["tfidf"]["accuracy"]["median"] == pytest.approx(expected)
    assert 0.4 < sst2["model"]["accuracy"]["median"] < 0.9
    assert 0.7 < sst2["baselines"]["tfidf"]["accuracy"]["median"] < 0.9


# -- bad input --------------------------------------------------------------------------------


def test_a_model_id_that_is_not_a_model_is_refused(tiny_shards):
    store = ArtifactStore(tiny_shards.store_url)
    with pytest.raises(StoreError, match="is a corpus artifact, not a model artifact"):
        plan_evaluation(store, tiny_shards.corpus_id, EvaluateConfig())
    with pytest.raises(StoreError, match="no artifact model-0000"):
        plan_evaluation(store, "model-" + "0" * 20, EvaluateConfig())


def test_a_bad_task_file_fails_before_any_work_and_publishes_nothing(
    tiny_shards, tiny_model, tmp_path
):
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,stars\nfine words,1\n")
    store = ArtifactStore(tiny_shards.store_url)
    before = {m.id for m in store.list("evaluation")}
    with pytest.raises(InputError, match=r"bad\.csv.*label"):
        task = TaskSpec(path=str(bad), text_field="sentence")
        plan_evaluation(store, tiny_model, quick(tasks=[task]))
    assert {m.id for m in store.list("evaluation")} == before


def test_config_errors_name_the_field(tiny_shards, tiny_model):
    with pytest.raises(ValidationError, match="seeds"):
        EvaluateConfig(seeds=0)
    with pytest.raises(ValidationError, match="baselines"):
        EvaluateConfig(baselines=["tfidf", "tfidf"])
    with pytest.raises(ValidationError, match="baselines"):
        EvaluateConfig(baselines=["bag-of-words"])
    store = ArtifactStore(tiny_shards.store_url)
    with pytest.raises(InputError, match="--max-seq-len 4096 is longer than"):
        plan_evaluation(store, tiny_model, EvaluateConfig(max_seq_len=4096))


def test_default_fine_tuning_rate_follows_the_encoder_width():
    """1e-3 suits the tiny preset; (128/H)^2 brings BERT-base into its paper's 2e-5..5e-5."""
    config = EvaluateConfig()
    assert config.resolved_lr(128) == 1e-3
    assert 2e-5 <= config.resolved_lr(768) <= 5e-5
    assert EvaluateConfig(lr=3e-4).resolved_lr(768) == 3e-4
