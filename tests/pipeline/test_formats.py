"""Reading raw files into documents: bertflow.pipeline.ingest.formats."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.ingest import formats
from bertflow.pipeline.ingest.formats import (
    Format,
    ReaderOptions,
    detect_format,
    markdown_to_text,
    read_documents,
)
from bertflow.pipeline.ingest.raw import RawDocument, ReadTally

COMPRESSORS = {
    "": lambda data: data,
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zst": lambda data: zstandard.ZstdCompressor().compress(data),
}
TEXTS = ["First document. It has two sentences.", "Zweites Dokument: Grüße aus Köln. 你好。"]


def read(
    path: Path, fmt: Format, options: ReaderOptions | None = None
) -> tuple[list[RawDocument], ReadTally]:
    tally = ReadTally()
    with path.open("rb") as stream:
        docs = list(read_documents(stream, path.name, fmt, options or ReaderOptions(), tally))
    return docs, tally


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    """Write `data`, compressed as `name`'s suffix says."""
    suffix = next((s for s in COMPRESSORS if s and name.endswith(s)), "")
    path = tmp_path / name
    path.write_bytes(COMPRESSORS[suffix](data))
    return path


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


# --- detection ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.txt", "text"),
        ("a.TEXT", "text"),
        ("notes.md", "markdown"),
        ("notes.markdown.gz", "markdown"),
        ("a.jsonl", "jsonl"),
        ("a.ndjson.zst", "jsonl"),
        ("a.json.xz", "json"),
        ("data/part-0.parquet", "parquet"),
        ("a.pq", "parquet"),
        ("enwiki-20240101-pages-articles1.xml.bz2", "wikipedia"),
        ("s3://bucket/dir.v2/a.txt.gz", "text"),
        ("a.csv", None),
        ("a.gz", None),
        ("a.txt.gz.bz2", None),
        ("README", None),
    ],
)
def test_detect_format_looks_past_one_compression_suffix(name: str, fmt: str | None) -> None:
    assert detect_format(name) == fmt


# --- round trips of every format under every compression ----------------------------------------


def jsonl_data() -> bytes:
    return "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS)).encode()


def wiki_data() -> bytes:
    pages = "".join(
        f"<page><title>T{i}</title><ns>0</ns><revision><text>{t}</text></revision></page>"
        for i, t in enumerate(TEXTS)
    )
    return (
        f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/">{pages}</mediawiki>'.encode()
    )


ROUND_TRIPS: dict[str, tuple[Format, bytes, list[str]]] = {
    "text": ("text", "\n\n".join(TEXTS).encode(), ["a.txt"]),
    "markdown": ("markdown", f"# Title\n\n{TEXTS[0]}\n\n{TEXTS[1]}\n".encode(), ["a.md"]),
    "jsonl": ("jsonl", jsonl_data(), ["a.jsonl:1", "a.jsonl:2"]),
    "json": ("json", json.dumps([{"text": t} for t in TEXTS]).encode(), ["a.json[0]", "a.json[1]"]),
    "parquet": (
        "parquet",
        parquet_bytes(pa.table({"text": TEXTS, "n": [1, 2]})),
        ["a.parquet[0]", "a.parquet[1]"],
    ),
    "wikipedia": ("wikipedia", wiki_data(), ["a.xml#T0", "a.xml#T1"]),
}
SUFFIXES = {"text": ".txt", "markdown": ".md", "jsonl": ".jsonl", "json": ".json"}
SUFFIXES |= {"parquet": ".parquet", "wikipedia": ".xml"}


@pytest.mark.parametrize("compression", list(COMPRESSORS))
@pytest.mark.parametrize("case", list(ROUND_TRIPS))
def test_every_format_round_trips_under_every_compression(
    tmp_path: Path, case: str, compression: str
) -> None:
    fmt, data, locations = ROUND_TRIPS[case]
    name = f"a{SUFFIXES[case]}{compression}"
    docs, tally = read(write(tmp_path, name, data), fmt)
    if fmt in ("text", "markdown"):  # one file, one document
        assert [d.text.split() for d in docs] == ["\n\n".join(TEXTS).split()]
    else:
        assert [d.text for d in docs] == TEXTS
    assert [d.location.replace(compression, "") for d in docs] == locations
    assert tally.records == len(docs)
    assert (tally.malformed, tally.replaced_chars) == (0, 0)


def test_multi_frame_zstd_file_is_read_whole(tmp_path: Path) -> None:
    frames = [zstandard.ZstdCompressor().compress(f"{t}\n".encode()) for t in TEXTS]
    path = tmp_path / "a.txt.zst"
    path.write_bytes(b"".join(frames))
    docs, _ = read(path, "text", ReaderOptions(doc_split="blank-lines"))
    assert [d.text.strip() for d in docs] == ["\n".join(TEXTS)]


def test_parquet_from_a_stream_that_cannot_seek(tmp_path: Path) -> None:
    class OneWay(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            return self._data.readinto(buffer)

    data = parquet_bytes(pa.table({"text": TEXTS}))
    docs = list(read_documents(OneWay(data), "a.parquet", "parquet", ReaderOptions(), ReadTally()))
    assert [d.text for d in docs] == TEXTS


def test_text_field_option_picks_the_json_field_and_parquet_column(tmp_path: Path) -> None:
    options = ReaderOptions(text_field="body")
    jsonl = write(tmp_path, "a.jsonl", b'{"body": "From body.", "text": "Not this."}\n')
    table = pa.table({"text": ["Not this."], "body": ["From body."]})
    parquet = write(tmp_path, "a.parquet", parquet_bytes(table))
    for path, fmt in ((jsonl, "jsonl"), (parquet, "parquet")):
        assert [d.text for d in read(path, fmt, options)[0]] == ["From body."]


def test_blank_texts_are_not_documents_and_not_malformed(tmp_path: Path) -> None:
    path = write(tmp_path, "a.jsonl", b'{"text": ""}\n{"text": "  \\n "}\n\n{"text": "Real."}\n')
    docs, tally = read(path, "jsonl")
    assert [d.location for d in docs] == ["a.jsonl:4"]
    assert (tally.records, tally.malformed) == (3, 0)


# --- document splitting -------------------------------------------------------------------------


def test_blank_line_split_makes_one_document_per_block(tmp_path: Path) -> None:
    path = write(
        tmp_path, "a.txt", b"Doc one line one.\nline two.\n\n\n  \nDoc two.\n\nDoc three.\n"
    )
    docs, tally = read(path, "text", ReaderOptions(doc_split="blank-lines"))
    assert [d.text for d in docs] == [
        "Doc one line one.\nline two.\n",
        "Doc two.\n",
        "Doc three.\n",
    ]
    assert [d.location for d in docs] == ["a.txt#1", "a.txt#2", "a.txt#3"]
    assert tally.records == 3


def test_separator_split_cuts_at_separator_lines_only(tmp_path: Path) -> None:
    text = "Doc one.\n\nStill doc one.\n  ----  \nDoc two.\n----\n----\n"
    path = write(tmp_path, "a.txt.gz", text.encode())
    options = ReaderOptions(doc_split="separator", doc_separator="----")
    docs, _ = read(path, "text", options)
    assert [d.text for d in docs] == ["Doc one.\n\nStill doc one.\n", "Doc two.\n"]
    assert [d.location for d in docs] == ["a.txt.gz#1", "a.txt.gz#2"]


def test_separator_split_needs_a_separator() -> None:
    with pytest.raises(ValueError, match="doc_separator"):
        ReaderOptions(doc_split="separator")


def test_markdown_split_converts_each_document(tmp_path: Path) -> None:
    text = "# One\n\nFirst *doc*.\n\n<!-- doc -->\n## Two\n\n```\ncode\n```\n\nSecond doc.\n"
    path = write(tmp_path, "a.md", text.encode())
    options = ReaderOptions(doc_split="separator", doc_separator="<!-- doc -->")
    docs, _ = read(path, "markdown", options)
    assert [(d.text, d.location) for d in docs] == [
        ("First doc.", "a.md#1"),
        ("Second doc.", "a.md#2"),
    ]


def test_markdown_to_text_keeps_prose_and_drops_code_headings_images_html() -> None:
    md = (
        "# Heading\n\nSome *emphasis*, a [link](http://x.org), `inline code` and "
        "![an image](a.png) <span>inline html</span>\nwrapped line.\n\n"
        "- item one\n- item **two**\n\n```python\nprint(1)\n```\n\n    indented code\n\n"
        "> quoted text\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n<div>\nhtml block\n</div>\n"
    )
    assert markdown_to_text(md).split("\n\n") == [
        "Some emphasis, a link, inline code and  inline html wrapped line.",
        "item one",
        "item two",
        "quoted text",
    ]


# --- bad input: whole files ---------------------------------------------------------------------


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def garbage_after_header(data: bytes) -> bytes:
    return data[:12] + bytes(range(256)) * 4


@pytest.mark.parametrize("damage", [truncated, garbage_after_header])
@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".zst"])
def test_corrupt_compressed_file_raises_input_error_naming_it(
    tmp_path: Path, suffix: str, damage: object
) -> None:
    text = " ".join(f"Sentence number {i} of a longer file." for i in range(2000)).encode()
    path = tmp_path / f"broken.txt{suffix}"
    path.write_bytes(damage(COMPRESSORS[suffix](text)))  # type: ignore[operator]
    with pytest.raises(InputError, match=rf"broken\.txt\{suffix}: corrupt \w+ stream"):
        read(path, "text")


def test_read_failure_of_the_source_is_not_reported_as_corruption() -> None:
    """A network error under a decompressor stays an OSError (retryable), not an InputError."""

    class FailingSource(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            raise ConnectionResetError("connection reset by peer")

    with pytest.raises(ConnectionResetError):
        list(read_documents(FailingSource(), "a.txt.gz", "text", ReaderOptions(), ReadTally()))


def test_invalid_json_array_file_raises_input_error(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.json", b'[{"text": "fine"}, {"text": "broken"')
    with pytest.raises(InputError, match=r"bad\.json: invalid JSON"):
        read(path, "json")


@pytest.mark.parametrize("content", [b'{"text": "an object, not an array"}', b"", b"  \n"])
def test_json_file_that_is_not_an_array_raises_input_error(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(InputError, match=r"obj\.json: expected a JSON array"):
        read(write(tmp_path, "obj.json", content), "json")


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_file_named_parquet_that_is_not_parquet_raises_input_error(
    tmp_path: Path, suffix: str
) -> None:
    path = write(tmp_path, f"fake.parquet{suffix}", b"just some text, not a parquet file\n" * 10)
    with pytest.raises(InputError, match=r"fake\.parquet.*: not a readable Parquet file"):
        read(path, "parquet")


def test_parquet_without_the_text_column_names_the_column_and_the_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "a.parquet", parquet_bytes(pa.table({"body": ["x"], "id": [1]})))
    with pytest.raises(
        InputError, match=r"a\.parquet: no column 'text'; columns are \['body', 'id'\]"
    ):
        read(path, "parquet")


def test_parquet_with_a_non_string_text_column_raises_input_error(tmp_path: Path) -> None:
    path = write(tmp_path, "a.parquet", parquet_bytes(pa.table({"text": [1, 2]})))
    with pytest.raises(InputError, match=r"column 'text' is int64"):
        read(path, "parquet")


def test_parquet_null_text_is_a_malformed_record(tmp_path: Path) -> None:
    path = write(tmp_path, "a.parquet", parquet_bytes(pa.table({"text": ["Fine.", None]})))
    docs, tally = read(path, "parquet")
    assert [d.text for d in docs] == ["Fine."]
    assert tally.malformed_examples == ["a.parquet[1]: text field 'text' is null"]


# --- bad input: single records ------------------------------------------------------------------


def test_malformed_json_lines_are_skipped_and_counted_with_their_line(tmp_path: Path) -> None:
    lines = [
        '{"text": "Good one."}',
        '{"text": "unterminated',
        '["an", "array"]',
        '{"body": "no text field"}',
        '{"text": 42}',
        '{"text": null}',
        '"just a string"',
        '{"text": "Good two."}',
    ]
    docs, tally = read(write(tmp_path, "d.jsonl", "\n".join(lines).encode()), "jsonl")
    assert [(d.text, d.location) for d in docs] == [
        ("Good one.", "d.jsonl:1"),
        ("Good two.", "d.jsonl:8"),
    ]
    assert (tally.records, tally.malformed) == (8, 6)
    assert tally.malformed_examples[0] == (
        "d.jsonl:2: invalid JSON (Invalid control character at: column 23)"
    )
    assert tally.malformed_examples[1:] == [
        "d.jsonl:3: record is an array, not an object",
        "d.jsonl:4: missing text field 'text'",
        "d.jsonl:5: text field 'text' is a number, not a string",
        "d.jsonl:6: text field 'text' is null, not a string",
        "d.jsonl:7: record is a string, not an object",
    ]


def test_malformed_json_array_elements_are_skipped_and_counted_with_their_index(
    tmp_path: Path,
) -> None:
    data = b'[{"text": "Good."}, 7, {"title": "x"}, {"text": ["a"]}, {"text": "Also good."}]'
    docs, tally = read(write(tmp_path, "d.json", data), "json")
    assert [d.location for d in docs] == ["d.json[0]", "d.json[4]"]
    assert tally.malformed_examples == [
        "d.json[1]: record is a number, not an object",
        "d.json[2]: missing text field 'text'",
        "d.json[3]: text field 'text' is an array, not a string",
    ]


def test_invalid_utf8_is_replaced_and_counted(tmp_path: Path) -> None:
    """Each bad sequence becomes one U+FFFD; a U+FFFD already in the file is not counted."""
    data = b'{"text": "caf\xe9 \xff\xfe ok \xef\xbf\xbd"}\n{"text": "clean"}\n'
    docs, tally = read(write(tmp_path, "u.jsonl.gz", data), "jsonl")
    assert docs[0].text == "caf\ufffd \ufffd\ufffd ok \ufffd"
    assert tally.replaced_chars == 3
    assert tally.malformed == 0


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_invalid_utf8_is_replaced_in_whole_file_formats(tmp_path: Path, fmt: Format) -> None:
    data = b"Bad \x80 byte." if fmt == "text" else b'[{"text": "Bad \x80 byte."}]'
    docs, tally = read(write(tmp_path, f"u.{fmt}", data), fmt)
    assert [d.text for d in docs] == ["Bad \ufffd byte."]
    assert tally.replaced_chars == 1


def test_characters_split_across_read_chunks_decode_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(formats, "CHUNK_BYTES", 5)
    text = "Grüße 你好 🙂 naïve — done."
    docs, tally = read(write(tmp_path, "c.txt.zst", text.encode()), "text")
    assert [d.text for d in docs] == [text]
    assert tally.replaced_chars == 0


def test_a_source_giving_one_byte_per_read_decodes_intact() -> None:
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            return self._data.readinto(memoryview(buffer)[:1])

    text = "Grüße 你好 🙂 naïve."
    tally = ReadTally()
    source = Trickle(b"\xef\xbb\xbf" + text.encode())
    docs = list(read_documents(source, "t.txt", "text", ReaderOptions(), tally))
    assert [d.text for d in docs] == [text]
    assert tally.replaced_chars == 0
    json_source = Trickle(b"\xef\xbb\xbf \n\t " + json.dumps([{"text": text}]).encode())
    docs = list(read_documents(json_source, "t.json", "json", ReaderOptions(), tally))
    assert [d.text for d in docs] == [text]


@pytest.mark.parametrize(
    ("fmt", "name"), [("jsonl", "b.jsonl"), ("json", "b.json"), ("text", "b.txt")]
)
def test_a_utf8_byte_order_mark_is_skipped(tmp_path: Path, fmt: Format, name: str) -> None:
    body = {"jsonl": b'{"text": "Hi."}\n', "json": b'[{"text": "Hi."}]', "text": b"Hi."}[fmt]
    docs, tally = read(write(tmp_path, name, b"\xef\xbb\xbf" + body), fmt)
    assert [d.text for d in docs] == ["Hi."]
    assert tally.malformed == 0


# --- tallies ------------------------------------------------------------------------------------


def test_tally_merge_adds_counts_and_keeps_at_most_20_examples() -> None:
    a, b = ReadTally(), ReadTally()
    for i in range(15):
        a.add_malformed(f"a:{i}", "bad")
        b.add_malformed(f"b:{i}", "bad")
    a.records, b.records, b.replaced_chars = 20, 30, 4
    a.skipped["redirect"] += 1
    b.skipped.update({"redirect": 2, "namespace": 1})
    a.merge(b)
    assert (a.records, a.malformed, a.replaced_chars) == (50, 30, 4)
    assert a.skipped == Counter({"redirect": 3, "namespace": 1})
    assert len(a.malformed_examples) == 20
    assert a.malformed_examples[14:] == [
        "a:14: bad",
        "b:0: bad",
        "b:1: bad",
        "b:2: bad",
        "b:3: bad",
        "b:4: bad",
    ]


def test_a_file_with_a_nul_byte_is_refused_as_not_text(tmp_path: Path) -> None:
    program = b"\x7fELF\x02\x01\x01\x00" + bytes(range(1, 256)) * 4
    for fmt, name in [("text", "prog.txt"), ("jsonl", "prog.jsonl"), ("markdown", "prog.md")]:
        with pytest.raises(InputError, match=rf"{name}: not text: a NUL byte at byte 7 "):
            read(write(tmp_path, name, program), fmt)


def test_a_file_mostly_not_utf8_is_refused_and_a_few_bad_bytes_are_replaced(
    tmp_path: Path,
) -> None:
    french = ("Le café était déjà fermé. " * 4000).encode("latin-1")  # 5 bad bytes in 26
    with pytest.raises(
        InputError,
        match=r"fr\.txt: not UTF-8 text: .*\(19\.2%, more than "
        r"max_undecodable_fraction 1\.0%\)",
    ):
        read(write(tmp_path, "fr.txt", french), "text")
    docs, tally = read(
        write(tmp_path, "fr.txt", french), "text", ReaderOptions(max_undecodable_fraction=0.2)
    )
    assert tally.replaced_chars == 20_000 and docs[0].text.startswith("Le caf\ufffd ")
    english = ("Plain English text, nothing more. " * 3000).encode() + b"\xff" * 20
    docs, tally = read(write(tmp_path, "en.txt", english), "text")
    assert tally.replaced_chars == 20
