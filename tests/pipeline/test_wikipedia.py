"""Wikipedia XML dumps: pipeline.ingest.wikipedia (and read_documents with fmt="wikipedia")."""

from __future__ import annotations

import bz2
import io
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from xml.sax.saxutils import escape

import pytest

from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.ingest.formats import ReaderOptions, read_documents
from bertflow.pipeline.ingest.raw import RawDocument, ReadTally
from bertflow.pipeline.ingest.wikipedia import iter_wiki_documents, skip_reason, wiki_to_text

ARTICLE = """{{Short description|Mathematician}}
{{Infobox person
| name = Ada Example
| birth_date = {{birth date|1815|12|10}}
}}
'''Ada Example''' ({{IPA|ˈeɪdə}}; 10 December 1815 – 1852) was an English [[mathematician]] \
and [[Writer|writer]].<ref name="bio">{{cite book |title=Life of Ada |year=1900}}</ref> \
She worked on the [[Analytical Engine]].<ref>Another source.</ref><!-- hidden remark -->

[[File:Ada.jpg|thumb|Portrait of [[Ada Example]]]]
== Early life ==
She studied <b>mathematics</b> and ''music'' with [http://example.org/tutor a private tutor] \
and read about <math>x^2</math> equations.{{citation needed|date=May 2020}}

{| class="wikitable"
|-
! Year !! Event
|-
| 1833 || TableCellText
|}

* She wrote notes.
* She published &amp; translated papers.

== References ==
{{Reflist}}
* ReferenceListEntry

== External links ==
* [http://example.org ExternalLinkEntry]

[[Category:English mathematicians]]
[[fr:Ada Example]]
"""


def page(title: str, text: str, ns: int = 0, redirect: str | None = None) -> str:
    redirect_tag = f'<redirect title="{redirect}" />' if redirect else ""
    return (
        f"<page><title>{escape(title)}</title><ns>{ns}</ns><id>1</id>{redirect_tag}"
        f"<revision><id>2</id><contributor><id>3</id></contributor>"
        f'<text bytes="1" xml:space="preserve">{escape(text)}</text></revision></page>\n'
    )


def dump(*pages: str, version: str = "0.11", file_namespace: str = "File") -> bytes:
    siteinfo = (
        "<siteinfo><sitename>Wikipedia</sitename><namespaces>"
        f'<namespace key="6" case="first-letter">{file_namespace}</namespace>'
        '<namespace key="14" case="first-letter">Category</namespace>'
        "</namespaces></siteinfo>\n"
    )
    xmlns = f"http://www.mediawiki.org/xml/export-{version}/"
    body = f'<mediawiki xmlns="{xmlns}" version="{version}" xml:lang="en">\n{siteinfo}'
    return (body + "".join(pages) + "</mediawiki>\n").encode()


SAMPLE_PAGES = [
    page("Ada Example", ARTICLE),
    page("Ada", "#REDIRECT [[Ada Example]]", redirect="Ada Example"),
    page("Countess Ada", "#redirect [[Ada Example]]"),
    page("Ada (disambiguation)", "'''Ada''' may refer to:\n* [[Ada Example]]"),
    page("Mercury", "'''Mercury''' may mean:\n* [[Mercury (planet)]]\n{{Disambiguation|surname}}"),
    page("Talk:Ada Example", "This article needs more sources.", ns=1),
]


def wiki_documents(data: bytes, name: str = "wiki.xml") -> tuple[list[RawDocument], ReadTally]:
    tally = ReadTally()
    return list(iter_wiki_documents(io.BytesIO(data), name, tally)), tally


@pytest.mark.parametrize("version", ["0.10", "0.11"])
def test_only_the_article_comes_out_of_the_dump(version: str) -> None:
    docs, tally = wiki_documents(dump(*SAMPLE_PAGES, version=version))
    assert [d.location for d in docs] == ["wiki.xml#Ada Example"]
    assert tally.records == 6
    assert tally.skipped == Counter({"redirect": 2, "disambiguation": 2, "namespace": 1})


def test_article_text_is_clean_prose() -> None:
    [doc], _ = wiki_documents(dump(*SAMPLE_PAGES))
    paragraphs = doc.text.split("\n\n")
    assert paragraphs[0] == (
        "Ada Example (10 December 1815 – 1852) was an English mathematician and writer. "
        "She worked on the Analytical Engine."
    )
    assert paragraphs[1] == (
        "She studied mathematics and music with a private tutor and read about equations."
    )
    assert paragraphs[2:] == ["She wrote notes.", "She published & translated papers."]


@pytest.mark.parametrize(
    "absent",
    [
        "Infobox",
        "Short description",
        "cite",
        "source",
        "hidden remark",
        "Portrait",
        "x^2",
        "citation needed",
        "TableCellText",
        "Year",
        "ReferenceListEntry",
        "ExternalLinkEntry",
        "Category",
        "English mathematicians",
        "fr:",
        "[[",
        "{{",
        "<",
        "'''",
        "==",
        "http",
    ],
)
def test_article_text_has_no_markup_or_reference_material(absent: str) -> None:
    [doc], _ = wiki_documents(dump(*SAMPLE_PAGES))
    assert absent not in doc.text


def test_file_links_in_the_dump_language_are_dropped() -> None:
    """The dump's siteinfo names the File namespace; a German dump's "Datei:" links go too."""
    text = "[[Datei:Bild.jpg|mini|Bildunterschrift]]\nDer Text bleibt."
    [doc], _ = wiki_documents(dump(page("Artikel", text), file_namespace="Datei"))
    assert doc.text == "Der Text bleibt."


def test_wiki_to_text_drops_sections_and_their_subsections_but_not_later_ones() -> None:
    markup = (
        "Lead.\n== See also ==\n* [[X]]\n=== More ===\nNo.\n"
        "== History ==\nYes [[:Category:Y|cats]]."
    )
    assert wiki_to_text(markup) == "Lead.\n\nYes cats."


def test_wiki_to_text_keeps_inline_tags_and_external_link_text() -> None:
    markup = "A <span>spanned</span> <small>small</small> word, [https://x.org linked text], [https://y.org]."
    assert wiki_to_text(markup) == "A spanned small word, linked text, ."


@pytest.mark.parametrize(
    ("title", "ns", "redirect", "text", "reason"),
    [
        ("Paris", "0", False, "Paris is a city.", None),
        ("Talk:Paris", "1", False, "Discussion.", "namespace"),
        ("Paname", "0", True, "#REDIRECT [[Paris]]", "redirect"),
        ("Paname", "0", False, "  #Redirect [[Paris]]", "redirect"),
        ("Paris (disambiguation)", "0", False, "Paris may be:", "disambiguation"),
        ("Paris", "0", False, "Text.\n{{disambig}}", "disambiguation"),
        ("Paris", "0", False, "Text.\n{{ Dab | x }}", "disambiguation"),
        ("Paris", "0", False, "Text.\n{{hndis|Paris}}", "disambiguation"),
        ("Paris", "0", False, "Text.\n{{geodis}}", "disambiguation"),
        ("Paris", "0", False, "Text.\n{{Set index article}}", "disambiguation"),
        ("Paris", "0", False, "Text.\n{{Disambiguation needed}}", None),
    ],
)
def test_skip_reason(title: str, ns: str, redirect: bool, text: str, reason: str | None) -> None:
    assert skip_reason(title, ns, redirect, text) == reason


def test_bz2_dump_reads_through_read_documents(tmp_path: Path) -> None:
    path = tmp_path / "enwiki-20240101-pages-articles1.xml.bz2"
    path.write_bytes(bz2.compress(dump(*SAMPLE_PAGES)))
    tally = ReadTally()
    with path.open("rb") as stream:
        docs = list(read_documents(stream, path.name, "wikipedia", ReaderOptions(), tally))
    assert [d.location for d in docs] == [f"{path.name}#Ada Example"]
    assert docs[0].text.startswith("Ada Example (10 December 1815")
    assert tally.records == 6


def test_malformed_xml_raises_input_error_naming_the_file_and_line() -> None:
    broken = dump(page("Fine", "Fine text.")).replace(b"</mediawiki>", b"<page><title>x</page>")
    with pytest.raises(InputError, match=r"^broken\.xml:4: malformed XML \(mismatched tag"):
        wiki_documents(broken, "broken.xml")


def test_finished_pages_are_cleared_from_the_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory stays bounded: whenever a page is yielded, the tree holds no finished pages."""
    roots: list[ET.Element] = []
    original = ET.iterparse

    def spying_iterparse(source: BinaryIO, events: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
        for event, element in original(source, events):
            if not roots:
                roots.append(element)
            yield event, element

    monkeypatch.setattr(ET, "iterparse", spying_iterparse)
    pages = io.BytesIO(dump(*(SAMPLE_PAGES * 50)))
    for doc in iter_wiki_documents(pages, "w.xml", ReadTally()):
        assert len(roots[0]) == 0, doc.location
