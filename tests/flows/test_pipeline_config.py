"""The pipeline's config: presets, YAML with field-named errors, and the form Prefect renders."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from bertflow.flows.cli import main
from bertflow.flows.pipeline import pretraining_pipeline
from bertflow.flows.pipeline_config import (
    SST2_ENV,
    PipelineConfig,
    bert_base,
    checkout,
    demo,
    load_config,
    preset,
    to_yaml,
)
from bertflow.pipeline.core.errors import InputError


def test_demo_is_the_default_and_trains_the_tiny_preset_on_the_built_in_corpus():
    config = PipelineConfig()
    assert config == demo()
    assert config.ingest.sources == ["demo"]
    assert [p.pretrain.preset for p in config.phases] == ["tiny"]
    assert config.evaluate.tasks[0].path == "demo-era"  # on every machine, ../shared or not


def test_the_demo_fine_tunes_on_sst2_where_there_is_a_copy(tmp_path: Path, monkeypatch):
    # The checkout is found through the installed package (pip's record of the editable
    # install), so ../shared beside it is found wherever the checkout is.
    assert checkout() == Path(__file__).resolve().parents[2]
    monkeypatch.setenv(SST2_ENV, str(tmp_path / "sst2"))
    assert [t.path for t in demo().evaluate.tasks] == ["demo-era"]  # no copy there
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "train.tsv").write_text("sentence\tlabel\na fine film\t1\n")
    assert [t.path for t in demo().evaluate.tasks] == ["demo-era", str(tmp_path / "sst2")]


def test_bert_base_is_the_published_two_phase_recipe():
    config = bert_base(sources=["enwiki-pages-articles.xml.bz2"])
    assert config.tokenizer.vocab_size == 30522 and config.tokenizer.lowercase
    first, second = config.phases
    assert (first.shard.max_seq_len, second.shard.max_seq_len) == (128, 512)
    assert (first.shard.max_predictions, second.shard.max_predictions) == (20, 77)
    assert {p.pretrain.preset for p in config.phases} == {"base"}
    assert {p.pretrain.batch_size for p in config.phases} == {256}
    assert (first.pretrain.max_steps, second.pretrain.max_steps) == (900_000, 100_000)
    assert first.pretrain.max_position_embeddings == 512  # so phase 2 can start from phase 1
    assert preset("bert-base").phases == bert_base().phases
    with pytest.raises(InputError, match="unknown pipeline preset 'huge'"):
        preset("huge")


def test_yaml_overrides_only_what_it_names_and_round_trips(tmp_path: Path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "store: /data/store\n"
        "ingest:\n  sources: [notes/]\n"
        "phases:\n  - pretrain:\n      max_steps: 50\n"
        "evaluate:\n  seeds: 5\n"
    )
    config = load_config(path)
    assert config.store == "/data/store" and config.ingest.sources == ["notes/"]
    assert config.phases[0].pretrain.max_steps == 50
    assert config.phases[0].pretrain.preset == "tiny"  # kept from the demo phase
    assert config.phases[0].shard == demo().phases[0].shard
    assert config.evaluate.seeds == 5 and config.evaluate.tasks == demo().evaluate.tasks
    again = tmp_path / "again.yaml"
    again.write_text(to_yaml(config))
    assert load_config(again) == config


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("phases:\n  - pretrain:\n      max_steps: 0\n", "phases.0.pretrain.max_steps"),
        ("evaluate:\n  seeds: many\n", "evaluate.seeds"),
        ("tokenizer:\n  vocab_sise: 100\n", "tokenizer.vocab_sise"),
        ("phases:\n  - shard:\n      objective: mlm\n", "phases.0.shard.objective"),
        ("phases: []\n", "phases"),
        ("phases:\n  - {}\n  - pretrain: {init_from: model-0}\n", "phases.1.pretrain.init_from"),
    ],
    ids=["bound", "type", "unknown-field", "choice", "no-phase", "init-from"],
)
def test_a_bad_value_in_yaml_is_rejected_naming_the_field(tmp_path: Path, text, named):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=rf"bad\.yaml: invalid config\n.*{named}"):
        load_config(path)


def test_unreadable_yaml_names_the_file(tmp_path: Path):
    with pytest.raises(InputError, match="absent.yaml: no such config file"):
        load_config(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("ingest: [unclosed\n")
    with pytest.raises(InputError, match="broken.yaml: not valid YAML"):
        load_config(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- ingest\n")
    with pytest.raises(InputError, match="expected a mapping of sections"):
        load_config(listed)


def test_the_cli_names_the_bad_field_and_prints_the_resolved_config(tmp_path: Path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("phases:\n  - pretrain:\n      lr: -1\n")
    assert main(["run", "--config", str(bad)]) == 1
    assert "phases.0.pretrain.lr" in capsys.readouterr().err
    assert main(["run", "--preset", "bert-base", "--print-config"]) == 0
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    assert load_config(printed) == bert_base()


def test_the_flow_parameter_schema_is_a_form_with_sections_descriptions_and_choices():
    """What the Prefect UI renders: the config's JSON schema, every stage a section."""
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(pretraining_pipeline).model_dump()
    definitions = schema["definitions"]
    pipeline = definitions["PipelineConfig"]["properties"]
    assert {"store", "corpus_id", "ingest", "tokenizer", "phases", "evaluate"} <= pipeline.keys()
    train = definitions["TrainConfig"]["properties"]
    assert train["max_steps"]["minimum"] == 1 and train["max_steps"]["description"]
    assert train["preset"]["enum"] == ["tiny", "mini", "small", "medium", "base", "large"]
    assert definitions["ShardConfig"]["properties"]["objective"]["enum"] == ["nsp", "sop", "none"]


def test_config_errors_in_python_name_the_field():
    with pytest.raises(ValidationError, match="phases"):
        PipelineConfig(phases=[])


def test_yaml_that_changes_a_phase_length_gets_that_length_s_derived_defaults(tmp_path: Path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "phases:\n"
        "  - shard: {max_seq_len: 128}\n"
        "  - shard: {max_seq_len: 64, max_predictions: 7, masking: static}\n"
    )
    first, second = load_config(path).phases
    assert demo().phases[0].shard.max_predictions == 5  # derived from the demo's 32 tokens
    assert first.shard.max_predictions == 19  # round(128 x 15%), not the demo's 5
    assert second.shard.max_predictions == 7  # given, so kept
    assert second.shard.dupe_factor == 5  # static masking's default, derived anew
    assert first.shard.num_validation_shards == first.shard.num_shards
    shown = yaml.safe_load(to_yaml(demo()))["phases"][0]["shard"]  # --print-config, the form
    assert shown["max_predictions"] is None and shown["max_seq_len"] == 32
