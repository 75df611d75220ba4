"""Wikipedia XML dumps: articles streamed out of a (multi-GB) dump, wikitext reduced to prose."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import BinaryIO

import mwparserfromhell
from mwparserfromhell.nodes import ExternalLink, Heading, HTMLEntity, Node, Tag, Text, Wikilink
from mwparserfromhell.wikicode import Wikicode

from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.ingest.raw import RawDocument, ReadTally

# Link prefixes whose links are not prose: English names, extended by the dump's own namespace
# names for Media (-2), File (6) and Category (14) so that e.g. German "Datei:" is dropped too.
DROPPED_LINK_PREFIXES = frozenset({"file", "image", "media", "category"})
_DROPPED_NAMESPACE_KEYS = {"-2", "6", "14"}
_INTERLANGUAGE = re.compile(r"^(?:[a-z]{2,3}(?:-[a-z0-9]+)*|simple):")
DROPPED_SECTIONS = frozenset(
    {
        "references",
        "external links",
        "see also",
        "further reading",
        "notes",
        "bibliography",
        "sources",
        "footnotes",
        "citations",
        "notes and references",
        "works cited",
    }
)
# Tags whose content is not running prose; the text of all other tags (<b>, <i>, <span>, ...) stays.
DROPPED_TAGS = frozenset(
    {
        "ref",
        "references",
        "gallery",
        "math",
        "chem",
        "ce",
        "score",
        "timeline",
        "imagemap",
        "graph",
        "mapframe",
        "maplink",
        "templatedata",
        "syntaxhighlight",
        "source",
        "pre",
        "table",
        "includeonly",
    }
)
_BREAKING_TAGS = {"li": "\n\n", "dt": "\n\n", "dd": "\n\n", "hr": "\n\n", "br": "\n"}
_DISAMBIGUATION = re.compile(
    r"\{\{\s*(?:disambiguation|disambig|dab|disamb|hndis|geodis|set[ _]index[ _]article)\s*[|}]",
    re.IGNORECASE,
)
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_WIKI_QUOTES = re.compile(r"'{2,}")  # bold/italic markup the parser could not pair up
_EMPTY_PARENS = re.compile(r"\(\s*[,;]?\s*\)")  # left by a dropped pronunciation template
_PAREN_SEPARATOR = re.compile(r"\(\s*[,;]\s*")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def _local(tag: str) -> str:
    """Element name without the export namespace (`{http://www.mediawiki.org/xml/export-0.N/}`)."""
    return tag.rpartition("}")[2]


# --- wikitext -----------------------------------------------------------------------------------


def _link_text(link: Wikilink, dropped_prefixes: frozenset[str]) -> str:
    title = str(link.title).strip()
    prefix = title.lstrip(":").partition(":")[0].strip().lower()
    if prefix in dropped_prefixes and not title.startswith(":"):
        return ""  # an image or a category tag; [[:Category:X]] is a visible link and stays
    if link.text is None and _INTERLANGUAGE.match(title):
        return ""
    return _code_text(link.text, dropped_prefixes) if link.text is not None else title.lstrip(":")


def _tag_text(tag: Tag, dropped_prefixes: frozenset[str]) -> str:
    name = str(tag.tag).strip().lower()
    if name in _BREAKING_TAGS:
        return _BREAKING_TAGS[name]
    if name in DROPPED_TAGS or tag.contents is None:
        return ""
    return _code_text(tag.contents, dropped_prefixes)


def _node_text(node: Node, dropped_prefixes: frozenset[str]) -> str:
    """Visible prose of one node; templates, comments and headings give none."""
    if isinstance(node, Text):
        return node.value
    if isinstance(node, Wikilink):
        return _link_text(node, dropped_prefixes)
    if isinstance(node, ExternalLink):
        return _code_text(node.title, dropped_prefixes) if node.title else ""  # bare URL: none
    if isinstance(node, Tag):
        return _tag_text(node, dropped_prefixes)
    if isinstance(node, HTMLEntity):
        return node.normalize()
    if isinstance(node, Heading):
        return "\n\n"  # a heading ends a paragraph; its title is not prose
    return ""  # templates, comments, template arguments


def _code_text(code: Wikicode, dropped_prefixes: frozenset[str]) -> str:
    return "".join(_node_text(node, dropped_prefixes) for node in code.nodes)


def _article_nodes(code: Wikicode) -> Iterator[Node]:
    """Top-level nodes outside reference-like sections (and their subsections)."""
    skip_below: int | None = None  # heading level of the section being dropped
    for node in code.nodes:
        if isinstance(node, Heading):
            if skip_below is not None and node.level > skip_below:
                continue
            title = node.title.strip_code().strip().lower()
            skip_below = node.level if title in DROPPED_SECTIONS else None
        if skip_below is None:
            yield node


def _tidy_paragraph(paragraph: str) -> str:
    text = _WIKI_QUOTES.sub("", _MAGIC_WORD.sub("", paragraph))
    text = _PAREN_SEPARATOR.sub("(", _EMPTY_PARENS.sub("", text))
    return " ".join(text.split())


def wiki_to_text(markup: str, dropped_prefixes: frozenset[str] = DROPPED_LINK_PREFIXES) -> str:
    """Prose of a wikitext article: paragraphs joined by blank lines.

    Kept: text, link and external-link text, the content of inline tags. Dropped: templates,
    comments, headings, references, tables, math, galleries, file/category/interlanguage links,
    and the References / External links / See also / ... sections.
    """
    code = mwparserfromhell.parse(markup)
    text = "".join(_node_text(node, dropped_prefixes) for node in _article_nodes(code))
    paragraphs = (_tidy_paragraph(p) for p in _PARAGRAPH_BREAK.split(text))
    return "\n\n".join(p for p in paragraphs if p)


# --- dump ---------------------------------------------------------------------------------------


def _page_fields(page: ET.Element) -> tuple[str, str, bool, str]:
    """(title, namespace, has <redirect>, wikitext of the last revision) of a <page>."""
    title, namespace, redirect, text = "", "0", False, ""
    for child in page:
        name = _local(child.tag)
        if name == "title":
            title = child.text or ""
        elif name == "ns":
            namespace = (child.text or "0").strip()
        elif name == "redirect":
            redirect = True
        elif name == "revision":
            for field in child:
                if _local(field.tag) == "text":
                    text = field.text or ""
    return title, namespace, redirect, text


def skip_reason(title: str, namespace: str, redirect: bool, text: str) -> str | None:
    """Why a page is not an article to train on, or None."""
    if namespace != "0":
        return "namespace"
    if redirect or text.lstrip()[:9].lower() == "#redirect":
        return "redirect"
    if title.rstrip().endswith("(disambiguation)") or _DISAMBIGUATION.search(text):
        return "disambiguation"
    return None


def _page_document(
    page: ET.Element, name: str, tally: ReadTally, dropped_prefixes: frozenset[str]
) -> RawDocument | None:
    tally.records += 1
    title, namespace, redirect, markup = _page_fields(page)
    reason = skip_reason(title, namespace, redirect, markup)
    if reason:
        tally.skipped[reason] += 1
        return None
    text = wiki_to_text(markup, dropped_prefixes)
    return RawDocument(text, f"{name}#{title}") if text else None


def iter_wiki_documents(stream: BinaryIO, name: str, tally: ReadTally) -> Iterator[RawDocument]:
    """Articles of a MediaWiki XML export (`stream` already decompressed), one page at a time.

    Finished pages are cleared from the tree, so memory stays bounded by one page.
    """
    dropped_prefixes = DROPPED_LINK_PREFIXES
    root: ET.Element | None = None
    try:
        for event, element in ET.iterparse(stream, events=("start", "end")):
            if root is None:
                root = element
            if event != "end":
                continue
            tag = _local(element.tag)
            if tag == "namespace" and element.get("key") in _DROPPED_NAMESPACE_KEYS:
                dropped_prefixes |= {(element.text or "").strip().lower()}
            elif tag == "page":
                doc = _page_document(element, name, tally, dropped_prefixes)
                root.clear()  # drop this page (and everything before it) from the tree
                if doc is not None:
                    yield doc
    except ET.ParseError as exc:
        raise InputError(f"{name}:{exc.position[0]}: malformed XML ({exc})") from exc
