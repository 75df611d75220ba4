"""Reading labelled downstream tasks: GLUE layouts, CSV/TSV/JSONL/Parquet, splits, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bertflow.flows.pipeline_config import shared_sst2
from bertflow.model.evaluation.task_spec import TaskSpec
from bertflow.model.evaluation.tasks import read_task, task_inputs
from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.ingest import demo_task
from bertflow.pipeline.ingest.sources import resolve_sources

SHARED_SST2 = shared_sst2() or Path("/nonexistent")


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def write_tsv(path: Path, rows: list[list[str]]) -> Path:
    return write_lines(path, ["\t".join(row) for row in rows])


def write_jsonl(path: Path, records: list[object]) -> Path:
    return write_lines(path, [json.dumps(r) for r in records])


def sst2_rows(n: int, header: tuple[str, ...] = ("sentence", "label")) -> list[list[str]]:
    return [list(header)] + [[f"sentence number {i} .", str(i % 2)] for i in range(n)]


def reviews_csv(path: Path, n: int) -> Path:
    """A single CSV with custom column names: `body`, `stars` (1..3)."""
    lines = ["id,body,stars"] + [f'{i},"review {i}, quoted",{1 + i % 3}' for i in range(n)]
    return write_lines(path, lines)


# --- GLUE ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not SHARED_SST2.is_dir(), reason="the shared SST-2 copy is not here")
def test_shared_sst2_reads_6920_train_and_1821_labelled_test_sentences():
    task = read_task(TaskSpec.parse(str(SHARED_SST2)))
    assert (task.name, task.problem, task.label_names) == ("sst2", "classification", ["0", "1"])
    assert len(task.train) == 6920 and len(task.evaluation) == 1821
    assert task.evaluation_split == "test" and task.split_origin == "files"
    assert task.metrics == ("accuracy",) and task.num_labels == 2
    assert task.train.pairs is None and task.train.labels.dtype == np.int64
    assert set(np.unique(task.evaluation.labels)) == {0, 1}
    assert [Path(i.uri).name for i in task.inputs] == ["train.tsv", "test.tsv", "dev.tsv"]
    assert task.dev is not None and len(task.dev) == 872  # chooses epochs; test is reported


def test_glue_sst2_evaluates_on_dev_when_test_has_no_labels(tmp_path):
    folder = tmp_path / "SST-2"
    write_tsv(folder / "train.tsv", sst2_rows(6))
    write_tsv(folder / "dev.tsv", sst2_rows(4))
    write_tsv(folder / "test.tsv", [["index", "sentence"], ["0", "unlabelled ."]])
    task = read_task(TaskSpec(path=str(folder)))
    assert task.name == "sst2" and task.evaluation_split == "dev"
    assert task.evaluation.source.endswith("SST-2/dev.tsv")
    assert [Path(i.uri).name for i in task.inputs] == ["train.tsv", "dev.tsv"]
    assert task.train.labels.tolist() == [0, 1, 0, 1, 0, 1]


def test_glue_sst2_evaluates_on_test_when_test_carries_labels(tmp_path):
    folder = tmp_path / "sst2"
    write_tsv(folder / "train.tsv", sst2_rows(6))
    write_tsv(folder / "dev.tsv", sst2_rows(4))
    write_tsv(folder / "test.tsv", sst2_rows(3))
    task = read_task(TaskSpec(path=str(folder)))
    assert task.evaluation_split == "test" and len(task.evaluation) == 3


def test_glue_texts_keep_their_quote_characters(tmp_path):
    """GLUE's TSVs are read with quoting off: a leading quote is text, not a quoted field."""
    folder = tmp_path / "sst2"
    rows = [["sentence", "label"], ['" a film , " he said', "1"], ['it "works" .', "0"]]
    write_tsv(folder / "train.tsv", rows)
    write_tsv(folder / "dev.tsv", rows)
    task = read_task(TaskSpec(path=str(folder)))
    assert task.train.texts == ['" a film , " he said', 'it "works" .']


@pytest.mark.parametrize(
    ("folder", "task_name", "header", "row"),
    [
        ("SST-2", "sst2", ["sentence", "label"], ["a b .", "1"]),
        ("sst_2", "sst2", ["sentence", "label"], ["a b .", "1"]),
        ("STS-B", "stsb", ["sentence1", "sentence2", "score"], ["a b .", "c d .", "1.5"]),
        (
            "qnli",
            "qnli",
            ["index", "question", "sentence", "label"],
            ["0", "a?", "b.", "entailment"],
        ),
    ],
)
def test_glue_task_is_inferred_from_folder_name_ignoring_case_and_dashes(
    tmp_path, folder, task_name, header, row
):
    write_tsv(tmp_path / folder / "train.tsv", [header, row, row])
    write_tsv(tmp_path / folder / "dev.tsv", [header, row])
    assert read_task(TaskSpec(path=str(tmp_path / folder))).name == task_name


def test_glue_task_can_be_named_for_a_folder_of_any_name(tmp_path):
    folder = tmp_path / "my-sentiment"
    write_tsv(folder / "train.tsv", sst2_rows(4))
    write_tsv(folder / "dev.tsv", sst2_rows(2))
    task = read_task(TaskSpec.parse(f"path={folder},glue-task=sst2,name=sentiment"))
    assert task.name == "sentiment" and task.metrics == ("accuracy",)


def test_glue_cola_reads_headerless_train_and_dev_and_ignores_unlabelled_test(tmp_path):
    folder = tmp_path / "CoLA"
    write_tsv(
        folder / "train.tsv",
        [
            ["gj04", "1", "", "Our friends won't buy this."],
            ["gj04", "0", "*", "They drank the pub."],
            ["gj04", "1", "", 'The "sailor" left.'],
        ],
    )
    write_tsv(folder / "dev.tsv", [["cl03", "0", "*", "Bill ate the."], ["cl03", "1", "", "Ok."]])
    write_tsv(folder / "test.tsv", [["index", "sentence"], ["0", "Bill whistled."]])
    task = read_task(TaskSpec(path=str(folder)))
    assert task.name == "cola" and task.metrics == ("mcc", "accuracy")
    assert task.train.texts[0] == "Our friends won't buy this." and len(task.train) == 3
    assert task.train.texts[2] == 'The "sailor" left.'
    assert task.train.labels.tolist() == [1, 0, 1] and task.evaluation.labels.tolist() == [0, 1]
    assert task.evaluation_split == "dev"


def test_glue_mrpc_reads_pairs_by_header_name(tmp_path):
    folder = tmp_path / "MRPC"
    header = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    rows = [
        header,
        ["1", "11", "12", "He said so .", "So he said ."],
        ["0", "21", "22", "It rained .", "The sun shone ."],
    ]
    write_tsv(folder / "train.tsv", rows)
    write_tsv(folder / "dev.tsv", [header[::-1], ["Again .", "Once more .", "32", "31", "1"]])
    task = read_task(TaskSpec(path=str(folder)))
    assert task.train.texts == ["He said so .", "It rained ."]
    assert task.train.pairs == ["So he said .", "The sun shone ."]
    assert task.evaluation.texts == ["Once more ."] and task.evaluation.pairs == ["Again ."]
    assert task.train.labels.tolist() == [1, 0] and task.metrics == ("f1", "accuracy")


def test_glue_stsb_scores_are_regression_even_when_whole_numbers(tmp_path):
    folder = tmp_path / "STS-B"
    header = "index genre filename year old_index source1 source2 sentence1 sentence2 score"
    rows = [
        header.split(),
        ["0", "g", "f", "2012", "1", "s", "s", "A man .", "A guy .", "5.000"],
        ["1", "g", "f", "2012", "2", "s", "s", "A cat .", "A car .", "0"],
    ]
    write_tsv(folder / "train.tsv", rows)
    write_tsv(folder / "dev.tsv", rows)
    task = read_task(TaskSpec(path=str(folder)))
    assert task.problem == "regression" and task.label_names is None and task.num_labels == 1
    assert task.train.labels.dtype == np.float64 and task.train.labels.tolist() == [5.0, 0.0]
    assert task.metrics == ("pearson", "spearman") and task.train.pairs == ["A guy .", "A car ."]


def test_glue_rte_string_labels_take_the_fixed_class_order(tmp_path):
    folder = tmp_path / "RTE"
    rows = [
        ["index", "sentence1", "sentence2", "label"],
        ["0", "A b .", "C .", "not_entailment"],
        ["1", "D e .", "D .", "entailment"],
    ]
    write_tsv(folder / "train.tsv", rows)
    write_tsv(folder / "dev.tsv", rows)
    task = read_task(TaskSpec(path=str(folder)))
    assert task.label_names == ["entailment", "not_entailment"]
    assert task.train.labels.tolist() == [1, 0]


def test_glue_mnli_evaluates_on_dev_matched(tmp_path):
    folder = tmp_path / "MNLI"
    rows = [
        ["index", "genre", "sentence1", "sentence2", "label1", "gold_label"],
        ["0", "g", "A .", "B .", "neutral", "neutral"],
        ["1", "g", "C .", "D .", "contradiction", "contradiction"],
    ]
    write_tsv(folder / "train.tsv", rows)
    write_tsv(folder / "dev_matched.tsv", rows)
    write_tsv(folder / "test_matched.tsv", [rows[0][:4], ["0", "g", "E .", "F ."]])
    task = read_task(TaskSpec(path=str(folder)))
    assert task.label_names == ["contradiction", "entailment", "neutral"]
    assert task.evaluation_split == "dev" and task.evaluation.labels.tolist() == [2, 0]


def test_glue_label_outside_the_task_classes_names_file_and_line(tmp_path):
    folder = tmp_path / "sst2"
    write_tsv(folder / "train.tsv", [["sentence", "label"], ["fine .", "1"], ["bad .", "2"]])
    write_tsv(folder / "dev.tsv", sst2_rows(2))
    with pytest.raises(InputError, match=r"sst2/train\.tsv:3: label '2' is not one of sst2's"):
        read_task(TaskSpec(path=str(folder)))


def test_glue_problem_that_contradicts_the_task_is_rejected(tmp_path):
    folder = tmp_path / "sst2"
    write_tsv(folder / "train.tsv", sst2_rows(2))
    write_tsv(folder / "dev.tsv", sst2_rows(2))
    with pytest.raises(InputError, match="'regression', but GLUE sst2 is classification"):
        read_task(TaskSpec(path=str(folder), problem="regression"))


# --- CSV, TSV, JSON Lines, Parquet --------------------------------------------------------------


def test_csv_folder_with_custom_columns_reads_train_and_validation(tmp_path):
    reviews_csv(tmp_path / "reviews" / "train.csv", 6)
    reviews_csv(tmp_path / "reviews" / "validation.csv", 3)
    spec = TaskSpec.parse(f"path={tmp_path / 'reviews'},text_field=body,label_field=stars")
    task = read_task(spec)
    assert task.name == "reviews" and task.split_origin == "files"
    assert task.evaluation_split == "validation"
    assert task.train.texts[0] == "review 0, quoted" and task.train.pairs is None
    assert task.label_names == ["1", "2", "3"] and task.metrics == ("accuracy", "macro_f1")
    assert task.train.labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_folder_evaluation_split_prefers_test_then_dev_then_validation(tmp_path):
    for split in ("train", "validation", "dev"):
        write_jsonl(
            tmp_path / "t" / f"{split}.jsonl",
            [{"text": split, "label": "a"}, {"text": split, "label": "b"}],
        )
    assert read_task(TaskSpec(path=str(tmp_path / "t"))).evaluation_split == "dev"
    assert read_task(TaskSpec(path=str(tmp_path / "t"))).dev is None  # dev is evaluated on
    write_jsonl(tmp_path / "t" / "test.jsonl", [{"text": "test", "label": "a"}])
    task = read_task(TaskSpec(path=str(tmp_path / "t")))
    assert task.evaluation_split == "test" and task.evaluation.texts == ["test"]
    assert task.dev is not None and task.dev.texts == ["dev", "dev"]  # beside test: selects
    assert task.dev.labels.tolist() == [0, 1] and len(task.inputs) == 3


def test_glue_folder_with_a_labelled_test_file_keeps_dev_for_selection(tmp_path):
    folder = tmp_path / "SST-2"
    write_tsv(folder / "train.tsv", sst2_rows(4))
    write_tsv(folder / "dev.tsv", sst2_rows(2))
    write_tsv(folder / "test.tsv", sst2_rows(3))
    task = read_task(TaskSpec(path=str(folder)))
    assert task.evaluation_split == "test" and len(task.evaluation) == 3
    assert task.dev is not None and len(task.dev) == 2


def test_tsv_file_with_a_text_pair_column_is_a_pair_task(tmp_path):
    rows = [["text", "text_pair", "label"]]
    rows += [[f"premise {i}", f'hypothesis "{i}"', "yes" if i % 2 else "no"] for i in range(10)]
    path = write_tsv(tmp_path / "nli.tsv", rows)
    task = read_task(TaskSpec(path=str(path)))
    assert task.name == "nli" and task.label_names == ["no", "yes"]
    assert task.metrics == ("accuracy", "f1")
    assert task.train.pairs is not None and task.evaluation.pairs is not None
    for split in (task.train, task.evaluation):
        assert split.pairs == [f'hypothesis "{t.split()[1]}"' for t in split.texts]


def test_jsonl_folder_reads_string_labels_and_named_pair_field(tmp_path):
    train = [
        {"q": f"question {i}", "a": f"answer {i}", "y": ["pos", "neg", "mid"][i % 3]}
        for i in range(6)
    ]
    write_jsonl(tmp_path / "qa" / "train.jsonl", train)
    write_lines(tmp_path / "qa" / "test.jsonl", ['{"q": "q?", "a": "a.", "y": "neg"}', "", " "])
    spec = TaskSpec(path=str(tmp_path / "qa"), text_field="q", text_pair_field="a", label_field="y")
    task = read_task(spec)
    assert task.label_names == ["mid", "neg", "pos"]
    assert task.train.labels.tolist() == [2, 1, 0, 2, 1, 0]
    assert task.train.pairs == [f"answer {i}" for i in range(6)]
    assert task.evaluation.texts == ["q?"] and task.evaluation.labels.tolist() == [1]


def test_parquet_file_with_fractional_targets_is_regression(tmp_path):
    n = 20
    table = pa.table(
        {
            "sentence": [f"s {i}" for i in range(n)],
            "other": [f"o {i}" for i in range(n)],
            "score": [i / 4 for i in range(n)],
        }
    )
    pq.write_table(table, tmp_path / "sim.parquet")
    spec = TaskSpec(
        path=str(tmp_path / "sim.parquet"),
        text_field="sentence",
        text_pair_field="other",
        label_field="score",
    )
    task = read_task(spec)
    assert task.problem == "regression" and task.metrics == ("pearson", "spearman", "mse")
    assert task.train.labels.dtype == np.float64 and task.num_labels == 1
    assert len(task.train) == 16 and len(task.evaluation) == 4
    for split in (task.train, task.evaluation):
        for text, pair, y in zip(split.texts, split.pairs or [], split.labels, strict=True):
            i = int(text.split()[1])
            assert pair == f"o {i}" and y == i / 4


def test_whole_number_floats_and_integers_are_classes_sorted_numerically(tmp_path):
    write_jsonl(
        tmp_path / "t" / "train.jsonl",
        [{"text": "a", "label": 10.0}, {"text": "b", "label": 2}, {"text": "c", "label": 2.0}],
    )
    write_jsonl(tmp_path / "t" / "dev.jsonl", [{"text": "d", "label": 10}])
    task = read_task(TaskSpec(path=str(tmp_path / "t")))
    assert task.problem == "classification" and task.label_names == ["2", "10"]
    assert task.train.labels.tolist() == [1, 0, 0] and task.evaluation.labels.tolist() == [1]


def test_explicit_regression_makes_whole_numbers_targets(tmp_path):
    path = reviews_csv(tmp_path / "r.csv", 10)
    task = read_task(
        TaskSpec(path=str(path), text_field="body", label_field="stars", problem="regression")
    )
    assert task.problem == "regression" and task.label_names is None
    assert set(task.train.labels.tolist()) <= {1.0, 2.0, 3.0}


def test_seeded_split_is_deterministic_sized_and_disjoint(tmp_path):
    path = reviews_csv(tmp_path / "reviews.csv", 50)
    spec = TaskSpec(path=str(path), text_field="body", label_field="stars", test_fraction=0.3)
    first, again = read_task(spec), read_task(spec)
    assert first.split_origin == "seeded" and first.evaluation_split == "test"
    assert len(first.evaluation) == 15 and len(first.train) == 35
    assert first.train.texts == again.train.texts
    assert first.evaluation.texts == again.evaluation.texts
    assert sorted(first.train.texts + first.evaluation.texts) == sorted(
        f"review {i}, quoted" for i in range(50)
    )
    assert first.evaluation.source == f"{path} (seeded split)"
    other = read_task(spec.model_copy(update={"split_seed": 1}))
    assert other.evaluation.texts != first.evaluation.texts


def test_task_data_fields_survive_a_seeded_split(tmp_path):
    """Rows keep their own label when shuffled out of file order."""
    rows = [["text", "label"]] + [[f"row {i}", "odd" if i % 2 else "even"] for i in range(30)]
    task = read_task(TaskSpec(path=str(write_tsv(tmp_path / "p.tsv", rows)), split_seed=7))
    names = task.label_names or []
    for split in (task.train, task.evaluation):
        for text, y in zip(split.texts, split.labels, strict=True):
            assert names[y] == ("odd" if int(text.split()[1]) % 2 else "even")


# --- TaskSpec -----------------------------------------------------------------------------------


def test_parse_accepts_a_bare_path_including_one_with_equals_signs():
    assert TaskSpec.parse("data/reviews.csv") == TaskSpec(path="data/reviews.csv")
    assert TaskSpec.parse("s3://b/date=2024/x.csv").path == "s3://b/date=2024/x.csv"


def test_parse_reads_key_value_pairs_with_dashes_or_underscores():
    spec = TaskSpec.parse(
        "path=data/reviews.csv,text-field=body,label_field=stars,name=reviews,test-fraction=0.25,"
        "split_seed=3,problem=regression"
    )
    assert spec == TaskSpec(
        path="data/reviews.csv",
        text_field="body",
        label_field="stars",
        name="reviews",
        test_fraction=0.25,
        split_seed=3,
        problem="regression",
    )


def test_identity_holds_every_field_that_shapes_the_data_and_rebuilds_the_spec():
    spec = TaskSpec(path="x.csv", text_pair_field="b")
    assert TaskSpec(**spec.identity()) == spec
    assert set(spec.identity()) == set(TaskSpec.model_fields) - {"seeds"}
    # how often it is fine-tuned does not change the data: evaluations stay comparable
    assert spec.model_copy(update={"seeds": 5}).identity() == spec.identity()


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("path=x.csv,colour=red", r"'path=x.csv,colour=red': unknown key 'colour'"),
        ("path=x.csv,test_fraction=1.5", r"test_fraction: Input should be less than 1"),
        ("path=x.csv,split-seed=abc", r"split_seed: Input should be a valid integer"),
        ("path=x.csv,problem=ranking", r"problem: Input should be"),
        ("name=x", r"'name=x': no path= key"),
        ("path=x.csv,name=a,name=b", r"key 'name' is given twice"),
        ("path=x.csv,format=csv,glue_task=sst2", r"glue_task: only with format 'glue' or 'auto'"),
    ],
)
def test_parse_rejects_bad_specs_naming_the_spec_and_key(spec, match):
    with pytest.raises(InputError, match=match):
        TaskSpec.parse(spec)


# --- Bad input ----------------------------------------------------------------------------------


def test_missing_path_is_named(tmp_path):
    with pytest.raises(InputError, match=r"task path '.*nowhere\.csv' does not exist"):
        task_inputs(TaskSpec(path=str(tmp_path / "nowhere.csv")))


def test_missing_column_names_file_column_and_existing_columns(tmp_path):
    path = reviews_csv(tmp_path / "r.csv", 10)
    with pytest.raises(InputError, match=r"r\.csv: no column 'text' \(columns: 'id', 'body', 'st"):
        read_task(TaskSpec(path=str(path)))
    with pytest.raises(InputError, match=r"r\.csv: no column 'second'"):
        read_task(
            TaskSpec(
                path=str(path), text_field="body", text_pair_field="second", label_field="stars"
            )
        )


def test_evaluation_file_without_the_train_pair_column_is_rejected(tmp_path):
    write_jsonl(tmp_path / "t" / "train.jsonl", [{"text": "a", "text_pair": "b", "label": "x"}])
    write_jsonl(tmp_path / "t" / "test.jsonl", [{"text": "a", "label": "x"}])
    with pytest.raises(InputError, match=r"t/test\.jsonl: no column 'text_pair'"):
        read_task(TaskSpec(path=str(tmp_path / "t")))


def test_header_only_split_is_an_empty_split_error(tmp_path):
    write_lines(tmp_path / "t" / "train.csv", ["text,label", "a,x", "b,y"])
    write_lines(tmp_path / "t" / "dev.csv", ["text,label"])
    with pytest.raises(InputError, match=r"t/dev\.csv: the dev split has no rows"):
        read_task(TaskSpec(path=str(tmp_path / "t")))


def test_undecodable_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncaf\u00e9,x\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin\.csv: not valid UTF-8"):
        read_task(TaskSpec(path=str(path)))


def test_jsonl_labels_mixing_numbers_and_strings_show_a_line_of_each(tmp_path):
    path = write_jsonl(
        tmp_path / "m.jsonl",
        [{"text": "a", "label": 1}, {"text": "b", "label": 0}, {"text": "c", "label": "pos"}],
    )
    with pytest.raises(
        InputError,
        match=r"m\.jsonl are not all of one kind: a number at "
        r".*m\.jsonl:1 \(1\); a string at .*m\.jsonl:3 \('pos'\)",
    ):
        read_task(TaskSpec(path=str(path)))


def test_jsonl_labels_mixing_booleans_and_numbers_are_rejected(tmp_path):
    path = write_jsonl(
        tmp_path / "b.jsonl", [{"text": "a", "label": True}, {"text": "b", "label": 0}]
    )
    with pytest.raises(InputError, match=r"a boolean at .*b\.jsonl:1 .*a number at .*b\.jsonl:2"):
        read_task(TaskSpec(path=str(path)))


def test_csv_labels_partly_numeric_are_rejected(tmp_path):
    path = write_lines(tmp_path / "c.csv", ["text,label", "a,1", "b,2", "c,pos", "d,1"])
    with pytest.raises(InputError, match=r"a number at .*c\.csv:2 \(1\); a string at .*c\.csv:4"):
        read_task(TaskSpec(path=str(path)))


def test_regression_with_string_labels_is_rejected(tmp_path):
    path = write_lines(tmp_path / "s.csv", ["text,label", "a,good", "b,bad", "c,good"])
    with pytest.raises(InputError, match=r"problem is 'regression' but the labels are strings"):
        read_task(TaskSpec(path=str(path), problem="regression"))


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        (["text,label", "a,x", "b,", "c,y"], r"bad\.csv:3: missing label in column 'label'"),
        (["text,label", "a,x", " ,y", "c,y"], r"bad\.csv:3: empty text in column 'text'"),
        (["text,label", "a,x", "b,y,z", "c,y"], r"bad\.csv:3: 3 fields, but the header has 2"),
    ],
)
def test_bad_csv_rows_name_file_and_line(tmp_path, lines, match):
    path = write_lines(tmp_path / "bad.csv", lines + [f"r{i},x" for i in range(5)])
    with pytest.raises(InputError, match=match):
        read_task(TaskSpec(path=str(path)))


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        (
            ['{"text": "a", "label": "x"}', '{"text": "b", "label": '],
            r"bad\.jsonl:2: not valid JSON",
        ),
        (
            ['{"text": "a", "label": "x"}', "", '["b", "y"]'],
            r"bad\.jsonl:3: a JSON list, not an obj",
        ),
        (
            ['{"text": "a", "label": "x"}', '{"label": "y"}'],
            r"bad\.jsonl:2: missing text in column",
        ),
        (['{"text": 5, "label": "x"}'], r"bad\.jsonl:1: column 'text' holds int 5, not text"),
        (['{"text": "a", "label": null}'], r"bad\.jsonl:1: missing label"),
        (['{"text": "a", "label": [1]}'], r"bad\.jsonl:1: label \[1\] is a list"),
    ],
)
def test_bad_jsonl_lines_name_file_and_line(tmp_path, lines, match):
    path = write_lines(tmp_path / "bad.jsonl", lines + ['{"text": "c", "label": "y"}'] * 5)
    with pytest.raises(InputError, match=match):
        read_task(TaskSpec(path=str(path)))


def test_parquet_null_label_names_file_and_row(tmp_path):
    labels = ["x", "y", None, "x", "y", "x"]
    pq.write_table(pa.table({"text": list("abcdef"), "label": labels}), tmp_path / "n.parquet")
    with pytest.raises(InputError, match=r"n\.parquet row 2: missing label"):
        read_task(TaskSpec(path=str(tmp_path / "n.parquet")))


def test_evaluation_label_unseen_in_train_names_file_and_label(tmp_path):
    write_lines(tmp_path / "t" / "train.csv", ["text,label", "a,pos", "b,neg"])
    write_lines(tmp_path / "t" / "test.csv", ["text,label", "c,pos", "d,meh"])
    with pytest.raises(InputError, match=r"t/test\.csv:3: label 'meh' does not occur in the train"):
        read_task(TaskSpec(path=str(tmp_path / "t")))


def test_single_class_train_split_is_rejected(tmp_path):
    write_lines(tmp_path / "t" / "train.csv", ["text,label", "a,pos", "b,pos"])
    write_lines(tmp_path / "t" / "test.csv", ["text,label", "c,pos"])
    with pytest.raises(InputError, match=r"single class 'pos'"):
        read_task(TaskSpec(path=str(tmp_path / "t")))


def test_seeded_split_of_too_few_rows_is_rejected(tmp_path):
    path = write_lines(tmp_path / "two.csv", ["text,label", "a,x", "b,y"])
    with pytest.raises(InputError, match=r"two\.csv: 2 rows are too few to hold out"):
        read_task(TaskSpec(path=str(path)))


def test_folder_without_train_file_lists_what_it_holds(tmp_path):
    write_lines(tmp_path / "t" / "notes.txt", ["hello"])
    with pytest.raises(InputError, match=r"no train\.csv, .* \(files: notes\.txt\)"):
        task_inputs(TaskSpec(path=str(tmp_path / "t")))


def test_unknown_file_extension_asks_for_a_format(tmp_path):
    path = write_lines(tmp_path / "data.txt", ["text,label"])
    with pytest.raises(InputError, match=r"data\.txt: cannot tell the format .*'\.txt'"):
        task_inputs(TaskSpec(path=str(path)))
    assert task_inputs(TaskSpec(path=str(path), format="csv"))[0].uri.endswith("data.txt")


# --- Fingerprints -------------------------------------------------------------------------------


def test_fingerprints_are_the_inputs_read_and_change_with_file_content(tmp_path):
    folder = tmp_path / "sst2"
    write_tsv(folder / "train.tsv", sst2_rows(4))
    write_tsv(folder / "dev.tsv", sst2_rows(2))
    spec = TaskSpec(path=str(folder))
    before = task_inputs(spec)
    assert read_task(spec).inputs == before
    assert before[0].fingerprint.startswith("sha256:")
    assert before[0].uri == str((folder / "train.tsv").resolve())
    assert before[0].size == (folder / "train.tsv").stat().st_size
    assert task_inputs(spec) == before
    write_tsv(folder / "dev.tsv", sst2_rows(3))
    after = task_inputs(spec)
    assert after[0] == before[0] and after[1].fingerprint != before[1].fingerprint


def test_csv_folder_on_s3_reads_and_fingerprints_by_etag(s3_env):
    base = s3_env.rsplit("/", 1)[0] + "/tasks/reviews"
    for split, n in (("train", 6), ("test", 3)):
        with fsspec.open(f"{base}/{split}.csv", "w") as f:
            f.write("body,stars\n" + "".join(f"review {i},{i % 2}\n" for i in range(n)))
    task = read_task(TaskSpec(path=base, text_field="body", label_field="stars"))
    assert len(task.train) == 6 and len(task.evaluation) == 3 and task.name == "reviews"
    assert [i.uri for i in task.inputs] == [f"{base}/train.csv", f"{base}/test.csv"]
    assert all(i.fingerprint.startswith("etag:") for i in task.inputs)


def test_demo_era_task_is_speeches_the_demo_corpus_never_sees():
    """The built-in task: paragraphs of held-out speeches labelled by era, fine-tuned and tested
    on different speeches, none of them in the `demo` corpus."""
    task = read_task(TaskSpec.parse("demo-era"))
    assert task.name == "demo-era" and task.problem == "classification"
    assert task.label_names == [label for _, label in demo_task.ERAS]
    train, test = demo_task.era_splits()
    assert not set(train.speeches) & set(test.speeches)
    corpus = {Path(f.uri).name for f in resolve_sources(["demo"])[0]}
    assert not corpus & set(train.speeches + test.speeches)
    assert len(corpus) + len(set(train.speeches + test.speeches)) == len(demo_task.all_speeches())
    for split in (task.train, task.evaluation):
        assert len(split) > 500 and set(split.labels.tolist()) == {0, 1, 2, 3}
    assert all(text in demo_task.speech_paragraphs(text) for text in task.train.texts[:5])
    inputs = task_inputs(TaskSpec.parse("demo-era"))
    assert inputs == task.inputs and {i.uri for i in inputs} == {
        f"demo://sotu/{name}" for name in set(train.speeches + test.speeches)
    }
