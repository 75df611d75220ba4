"""Artifact ids are a stable hash of what made an artifact; malformed ids are refused."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

from bertflow.pipeline.core.manifest import (
    FORMAT_VERSIONS,
    ID_HEX_CHARS,
    InputFingerprint,
    Manifest,
    Producer,
    artifact_id,
    kind_of,
    sha256_file,
)

CONFIG = {"source": "sotu", "min_chars": 20, "clean": {"unicode": "NFC", "lower": False}}
UPSTREAM = {"raw": "corpus-00112233445566778899"}
INPUTS = [InputFingerprint(uri="file:///raw/sotu.txt", size=11, fingerprint="sha256:ab12")]


def make_id(**changes: Any) -> str:
    fields = {"kind": "corpus", "config": CONFIG, "upstream": UPSTREAM, "inputs": INPUTS}
    return artifact_id(**(fields | changes))


def test_artifact_id_is_kind_dash_hex_digest() -> None:
    assert re.fullmatch(rf"corpus-[0-9a-f]{{{ID_HEX_CHARS}}}", make_id())


def test_artifact_id_ignores_dict_key_order_at_every_depth() -> None:
    reordered_config = {
        "clean": {"lower": False, "unicode": "NFC"},
        "min_chars": 20,
        "source": "sotu",
    }
    upstream = {"b": "corpus-" + "1" * ID_HEX_CHARS, "a": "corpus-" + "2" * ID_HEX_CHARS}
    reordered_upstream = dict(reversed(upstream.items()))
    assert make_id(config=reordered_config, upstream=upstream) == make_id(
        upstream=reordered_upstream
    )


def test_artifact_id_treats_missing_upstream_and_inputs_as_empty() -> None:
    assert artifact_id("corpus", CONFIG) == artifact_id("corpus", CONFIG, upstream={}, inputs=[])


@pytest.mark.parametrize(
    "changes",
    [
        {"config": CONFIG | {"min_chars": 21}},
        {"config": CONFIG | {"clean": {"unicode": "NFKC", "lower": False}}},
        {"upstream": {"raw": "corpus-99887766554433221100"}},
        {"upstream": {"other_role": UPSTREAM["raw"]}},
        {"inputs": [INPUTS[0].model_copy(update={"fingerprint": "sha256:cd34"})]},
        {"inputs": []},
    ],
    ids=[
        "config-value",
        "nested-config",
        "upstream-id",
        "upstream-role",
        "input-print",
        "no-input",
    ],
)
def test_artifact_id_changes_with_what_made_the_artifact(changes: dict[str, Any]) -> None:
    assert make_id(**changes) != make_id()


def test_artifact_id_changes_with_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FORMAT_VERSIONS, "tokenizer", FORMAT_VERSIONS["corpus"])
    other = make_id(kind="tokenizer")
    assert other.startswith("tokenizer-")
    assert other.removeprefix("tokenizer-") != make_id().removeprefix("corpus-")


def test_artifact_id_changes_when_the_kind_format_version_is_bumped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = make_id()
    monkeypatch.setitem(FORMAT_VERSIONS, "corpus", FORMAT_VERSIONS["corpus"] + 1)
    assert make_id() != before


def test_artifact_id_rejects_an_unknown_kind_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown artifact kind 'bogus'.*'corpus'"):
        artifact_id("bogus", CONFIG)


def test_kind_of_returns_the_kind_an_id_names() -> None:
    assert kind_of(make_id()) == "corpus"


@pytest.mark.parametrize(
    "bad_id",
    [
        "",
        "corpus",
        "corpus-",
        "corpus-0123",  # digest too short
        "corpus-" + "0" * (ID_HEX_CHARS + 1),  # digest too long
        "corpus_" + "0" * ID_HEX_CHARS,  # wrong separator
        "bogus-" + "0" * ID_HEX_CHARS,  # unknown kind
    ],
)
def test_kind_of_rejects_a_malformed_id_saying_what_an_id_looks_like(bad_id: str) -> None:
    with pytest.raises(ValueError, match="is not an artifact id") as excinfo:
        kind_of(bad_id)
    message = str(excinfo.value)
    assert repr(bad_id) in message
    assert f"<kind>-<{ID_HEX_CHARS} hex chars>" in message and "corpus" in message


@pytest.mark.parametrize("digest", ["z" * ID_HEX_CHARS, "a" * (ID_HEX_CHARS - 2) + "/x"])
def test_kind_of_rejects_a_digest_that_is_not_lowercase_hex(digest: str) -> None:
    with pytest.raises(ValueError, match="is not an artifact id"):
        kind_of(f"corpus-{digest}")


def test_manifest_json_round_trips_with_sorted_keys() -> None:
    manifest = Manifest(
        id=make_id(),
        kind="corpus",
        format_version=FORMAT_VERSIONS["corpus"],
        created="2026-01-01T00:00:00+00:00",
        config=CONFIG,
        upstream=UPSTREAM,
        inputs=INPUTS,
        producer=Producer(bertflow_version="0.1.0"),
    )
    text = manifest.to_json()
    assert Manifest.model_validate_json(text) == manifest
    top_keys = re.findall(r'^  "(\w+)":', text, flags=re.MULTILINE)
    assert top_keys == sorted(top_keys)


def test_sha256_file_matches_hashlib_across_chunk_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    data = bytes(range(256)) * 41  # not a multiple of the chunk size below
    path.write_bytes(data)
    assert sha256_file(path, chunk_bytes=1000) == hashlib.sha256(data).hexdigest()
