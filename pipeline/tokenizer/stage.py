"""The tokenizer stage: a BERT WordPiece vocabulary trained on a corpus's train split.

Training streams sentences from the corpus Parquet files. Past `sample_bytes`, a deterministic
sample of documents (chosen by their hash) is used, so time and memory are bounded on any corpus.
An existing BERT `vocab.txt` can be imported instead of training.

The artifact holds `tokenizer.json` (HuggingFace `tokenizers`), `vocab.txt` (one token per line,
id = line number) and the files `transformers.BertTokenizerFast.from_pretrained` reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.literals import CLS, MASK, PAD, SEP, SPECIAL_TOKENS, UNK
from bertflow.pipeline.core.manifest import InputFingerprint, Manifest, artifact_id, sha256_file
from bertflow.pipeline.core.progress import Progress, ProgressCallback
from bertflow.pipeline.core.stage import cached_or_built
from bertflow.pipeline.core.store import ArtifactStore, Published
from bertflow.pipeline.ingest.corpus import iter_documents
from bertflow.pipeline.tokenizer.config import TokenizerConfig

MODEL_MAX_LENGTH = 512
CHAR_COUNT_BATCH = 1 << 20  # characters per numpy count: its buffers are 12x this in bytes
VALIDATION_SENTENCES = 20_000  # enough for stable rates, cheap on any corpus
EXAMPLE_SENTENCES = 5
WARN_UNK_RATE = 0.01  # a WordPiece vocabulary trained on the text has next to no [UNK]
MAX_UNK_RATE = 0.25


@dataclass(frozen=True)
class TokenizerPlan:
    config: TokenizerConfig
    corpus: Manifest
    inputs: list[InputFingerprint]  # an imported vocabulary file, else none
    artifact_id: str

    @property
    def upstream(self) -> dict[str, str]:
        return {"corpus": self.corpus.id}


def plan_tokenizer(store: ArtifactStore, corpus_id: str, config: TokenizerConfig) -> TokenizerPlan:
    """Check the corpus (and an imported vocabulary) and name the tokenizer artifact."""
    corpus = store.require(corpus_id, kind="corpus")
    if not corpus.stats.get("documents", {}).get("train"):
        raise InputError(f"{corpus_id}: the corpus has an empty train split")
    inputs = []
    if config.vocab is not None:
        path = Path(config.vocab).expanduser()
        if not path.is_file():
            raise InputError(f"{config.vocab}: no such vocabulary file")
        inputs.append(
            InputFingerprint(
                uri=str(path.resolve()),
                size=path.stat().st_size,
                fingerprint="sha256:" + sha256_file(path),
            )
        )
    tokenizer_id = artifact_id(
        "tokenizer", config.identity(), upstream={"corpus": corpus_id}, inputs=inputs
    )
    return TokenizerPlan(config, corpus, inputs, tokenizer_id)


def make_tokenizer(
    store: ArtifactStore,
    corpus_id: str,
    config: TokenizerConfig,
    callbacks: Sequence[ProgressCallback] = (),
    flow_run_id: str | None = None,
) -> Published:
    """Plan, skip when the tokenizer exists, else build and publish it."""
    plan = plan_tokenizer(store, corpus_id, config)
    return cached_or_built(
        store, plan, lambda: build_and_publish(store, plan, callbacks, flow_run_id)
    )


def build_and_publish(
    store: ArtifactStore,
    plan: TokenizerPlan,
    callbacks: Sequence[ProgressCallback] = (),
    flow_run_id: str | None = None,
) -> Published:
    """Train (or import) the vocabulary, measure it on the validation split, and publish it;
    progress goes by those two passes (the trainer reports nothing on its way)."""
    config, corpus, tokenizer_id = plan.config, plan.corpus, plan.artifact_id
    progress = Progress("tokenizer", 2, "pass", callbacks)
    started = time.monotonic()
    store.check_intact(corpus)  # both splits are read: training, then validation
    try:
        if config.vocab is not None:
            progress.phase("importing the vocabulary")
            tokenizer = bert_tokenizer(read_vocab(Path(config.vocab).expanduser()), config)
            sampled = {"sampled_bytes": 0, "sampled_documents": 0, "sample_fraction": 0.0}
        else:
            progress.phase("training WordPiece")
            tokenizer, sampled = train(store, corpus, config)
        seconds = time.monotonic() - started
        progress.advance(1)
        progress.phase("measuring on the validation split")
        stats = {
            "vocab_size": tokenizer.get_vocab_size(),
            "imported_vocab": config.vocab is not None,
            **sampled,
            "training_seconds": round(seconds, 3),
            **validation_stats(tokenizer, store, corpus),
        }
        progress.advance(1)
    finally:
        progress.close()
    stats["warnings"] = unknown_token_warnings(stats, corpus.id, config)
    with store.staging(tokenizer_id) as staging:
        write_tokenizer_files(tokenizer, config, staging)
        return store.publish(
            staging,
            tokenizer_id,
            config=config.model_dump(mode="json"),
            upstream={"corpus": corpus.id},
            inputs=plan.inputs,
            stats=stats,
            summary=tokenizer_summary(config, stats),
            layout={
                "tokenizer": "tokenizer.json",
                "vocab": "vocab.txt",
                "lowercase": config.lowercase,
            },
            flow_run_id=flow_run_id,
        )


def tokenizer_summary(config: TokenizerConfig, stats: dict[str, Any]) -> str:
    """One line on a tokenizer: its size and case, and how it splits validation text."""
    case = "uncased" if config.lowercase else "cased"
    if not stats.get("validation_sentences"):
        vocab = stats.get("vocab_size", 0)
        return f"{vocab:,} tokens ({case}); not measured: empty validation split"
    return (
        f"{stats.get('vocab_size', 0):,} tokens ({case}), unk rate"
        f" {stats.get('unk_rate', 0):.4%}, {stats.get('pieces_per_word', 0)} pieces/word"
    )


def tokenizer_markdown(manifest: Manifest) -> str:
    """The most frequent validation tokens and a few validation sentences as they are split."""
    stats = manifest.stats
    lines = [
        "## Most frequent tokens on the validation split",
        "",
        "| token | count |",
        "|---|---:|",
    ]
    lines += [f"| `{token}` | {count:,} |" for token, count in stats.get("top_tokens", [])]
    lines += ["", "## Validation sentences as they are split", ""]
    for example in stats.get("examples", []):
        lines += [f"> {example['sentence']}", "", "`" + " ".join(example["tokens"]) + "`", ""]
    return "\n".join(lines)


def unknown_token_warnings(
    stats: dict[str, Any], corpus_id: str, config: TokenizerConfig
) -> list[str]:
    """A warning when more than WARN_UNK_RATE of the validation tokens are [UNK]; an error (the
    tokenizer is not published) above MAX_UNK_RATE: the model could learn nothing from it."""
    rate = stats.get("unk_rate")
    if rate is None or rate <= WARN_UNK_RATE:
        return []
    source = f"the imported vocabulary {config.vocab}" if config.vocab else "this vocabulary"
    said = (
        f"{rate:.1%} of the tokens of {corpus_id}'s validation text are [UNK] with {source} "
        f"({stats['vocab_size']:,} tokens)"
    )
    if rate > MAX_UNK_RATE:
        raise InputError(
            f"{said}, more than {MAX_UNK_RATE:.0%}: a model could learn little from it; use a "
            f"vocabulary made for this text, or train one (no --vocab)"
        )
    return [f"{said}; well-made vocabularies stay under {WARN_UNK_RATE:.0%}"]


# -- building the tokenizer -----------------------------------------------------------------------


def bert_tokenizer(vocab: dict[str, int] | None, config: TokenizerConfig) -> Tokenizer:
    """BERT's pipeline around a WordPiece model (empty when `vocab` is None, for training)."""
    model = models.WordPiece(
        vocab=vocab or {}, unk_token=UNK, max_input_chars_per_word=config.max_chars_per_word
    )
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=config.lowercase
    )  # strip_accents=None follows lowercase, as in BERT
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    if vocab is not None:
        tokenizer.add_special_tokens(list(SPECIAL_TOKENS))  # never split, skipped when decoding
        _add_post_processor(tokenizer)
    return tokenizer


def _add_post_processor(tokenizer: Tokenizer) -> None:
    cls_id, sep_id = tokenizer.token_to_id(CLS), tokenizer.token_to_id(SEP)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0",
        pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, cls_id), (SEP, sep_id)],
    )


def train(
    store: ArtifactStore, corpus: Manifest, config: TokenizerConfig
) -> tuple[Tokenizer, dict]:
    """Train WordPiece on the sample, deterministically.

    The `tokenizers` trainer numbers the alphabet's continuation pieces (`##a`) in the order of
    its word hash map, which changes from process to process, and breaks ties between equally
    frequent merges by those numbers; which characters survive `limit_alphabet` also depends on
    ties. So the alphabet is chosen here (most frequent first, ties by code point) and handed to the
    trainer, with every `##` piece, as initial tokens in a fixed order: the numbers, the tie breaks
    and so the whole vocabulary are then the same on every run and any number of threads.
    """
    tokenizer = bert_tokenizer(None, config)
    sample = _Sample(corpus, config.sample_bytes)
    alphabet = char_alphabet(sample.documents(store), tokenizer.normalizer, config.limit_alphabet)
    initial = [*SPECIAL_TOKENS, *alphabet, *(f"##{c}" for c in alphabet)]
    if len(initial) > config.vocab_size:
        raise InputError(
            f"vocab_size {config.vocab_size} is smaller than the {len(SPECIAL_TOKENS)} specials"
            f" plus the alphabet ({len(alphabet)} characters, each also as a ## piece):"
            f" raise --vocab-size to at least {len(initial)} or lower --limit-alphabet"
        )
    trainer = trainers.WordPieceTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        limit_alphabet=len(alphabet),
        initial_alphabet=alphabet,
        special_tokens=initial,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    with _rayon_threads(config.threads):
        tokenizer.train_from_iterator(sample.sentences(store), trainer=trainer)
    return canonical(tokenizer, config), sample.stats()


def char_alphabet(
    documents: Iterator[list[str]], normalizer: normalizers.Normalizer, limit: int
) -> list[str]:
    """The `limit` most frequent characters of the normalised text (ties by code point), sorted.

    Counting code points of the raw text and normalising each distinct one gives the counts of
    normalising the whole text (the BERT normaliser works character by character), at numpy speed.
    """
    raw = np.zeros(0x110000, np.int64)
    pending: list[str] = []
    pending_chars = 0
    for sentences in documents:
        pending.extend(sentences)
        pending_chars += sum(map(len, sentences))
        if pending_chars >= CHAR_COUNT_BATCH:
            raw += _code_point_counts(pending)
            pending, pending_chars = [], 0
    raw += _code_point_counts(pending)
    counts: Counter[str] = Counter()
    for code_point in np.flatnonzero(raw):
        if 0xD800 <= code_point <= 0xDFFF:  # lone surrogates cannot reach the tokenizer
            continue
        for char in normalizer.normalize_str(chr(code_point)):
            if not char.isspace():
                counts[char] += int(raw[code_point])
    return sorted(sorted(counts, key=lambda c: (-counts[c], c))[:limit])


def _code_point_counts(texts: list[str]) -> np.ndarray:
    data = "".join(texts).encode("utf-32-le", errors="surrogatepass")
    return np.bincount(np.frombuffer(data, np.uint32), minlength=0x110000)


def canonical(tokenizer: Tokenizer, config: TokenizerConfig) -> Tokenizer:
    """Rebuild from the vocabulary alone: the trainer registered the alphabet as special tokens,
    and the files should depend on nothing but the vocabulary."""
    vocab = tokenizer.get_vocab()
    ordered = sorted(vocab, key=vocab.__getitem__)
    return bert_tokenizer({token: i for i, token in enumerate(ordered)}, config)


class _Sample:
    """Sentences of the train split, all of them or a hash-chosen share of documents."""

    def __init__(self, corpus: Manifest, sample_bytes: int):
        self.corpus = corpus
        total = corpus.stats["characters"]["train"]  # characters ~ bytes for sizing purposes
        self.fraction = min(1.0, sample_bytes / total) if total else 1.0
        self.threshold = int(self.fraction * 2**64)
        self.n_bytes = self.n_documents = 0

    def documents(self, store: ArtifactStore) -> Iterator[list[str]]:
        # doc_id is a hash, so its last 16 hex digits choose documents evenly and for good
        # (the split already used the first 16: those would leave a skewed range).
        below = None if self.fraction >= 1.0 else f"{min(self.threshold, 2**64 - 1):016x}"
        for _, sentences in iter_documents(store, self.corpus, "train", hash_below=below):
            yield sentences

    def sentences(self, store: ArtifactStore) -> Iterator[str]:
        self.n_documents = self.n_bytes = 0
        for sentences in self.documents(store):
            self.n_documents += 1
            self.n_bytes += sum(map(len, sentences))
            yield from sentences

    def stats(self) -> dict[str, Any]:
        return {
            "sampled_bytes": self.n_bytes,
            "sampled_documents": self.n_documents,
            "sample_fraction": round(self.fraction, 6),
        }


@contextlib.contextmanager
def _rayon_threads(threads: int | None) -> Iterator[None]:
    """Set RAYON_NUM_THREADS for the duration (tokenizers reads it when its pool starts)."""
    saved = os.environ.get("RAYON_NUM_THREADS")
    if threads:
        os.environ["RAYON_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("RAYON_NUM_THREADS", None)
        else:
            os.environ["RAYON_NUM_THREADS"] = saved


# -- importing a vocabulary -----------------------------------------------------------------------


def read_vocab(path: Path) -> dict[str, int]:
    """A BERT vocab.txt as {token: line number}; errors name the file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e})") from None
    vocab: dict[str, int] = {}
    for number, token in enumerate(lines):
        if not token.strip():
            raise InputError(f"{path}:{number + 1}: empty token")
        if token in vocab:
            raise InputError(
                f"{path}:{number + 1}: duplicated token {token!r}"
                f" (first on line {vocab[token] + 1})"
            )
        vocab[token] = number
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise InputError(f"{path}: missing special tokens {', '.join(missing)}")
    if vocab[PAD] != 0:
        raise InputError(
            f"{path}: {PAD} must be the first token (id 0), found on line {vocab[PAD] + 1}"
        )
    return vocab


# -- files and statistics -------------------------------------------------------------------------


def write_tokenizer_files(tokenizer: Tokenizer, config: TokenizerConfig, folder: Path) -> None:
    """tokenizer.json, vocab.txt, and the config files `transformers` reads."""
    tokenizer.save(str(folder / "tokenizer.json"))
    vocab = tokenizer.get_vocab()
    (folder / "vocab.txt").write_text(
        "".join(f"{token}\n" for token in sorted(vocab, key=vocab.__getitem__)), encoding="utf-8"
    )
    specials = {
        "pad_token": PAD,
        "unk_token": UNK,
        "cls_token": CLS,
        "sep_token": SEP,
        "mask_token": MASK,
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
    tokenizer_config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": config.lowercase,
        "strip_accents": None,
        "tokenize_chinese_chars": True,
        "model_max_length": MODEL_MAX_LENGTH,
        "clean_up_tokenization_spaces": False,
        **specials,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")


def validation_stats(
    tokenizer: Tokenizer, store: ArtifactStore, corpus: Manifest
) -> dict[str, Any]:
    """Unknown-token rate, pieces per word and whole-word share on validation sentences."""
    sentences = []
    for _, doc in iter_documents(store, corpus, "validation"):
        sentences.extend(doc[: VALIDATION_SENTENCES - len(sentences)])
        if len(sentences) >= VALIDATION_SENTENCES:
            break
    if not sentences:
        return {"validation_sentences": 0, "not_measured": "the corpus's validation split is empty"}
    encodings = tokenizer.encode_batch(sentences, add_special_tokens=False)
    unk_id = tokenizer.token_to_id(UNK)
    tokens = words = whole = unknown = 0
    counts: Counter[int] = Counter()
    for encoding in encodings:
        pieces_per_word = Counter(w for w in encoding.word_ids if w is not None)
        tokens += len(encoding.ids)
        words += len(pieces_per_word)
        whole += sum(1 for n in pieces_per_word.values() if n == 1)
        unknown += sum(1 for i in encoding.ids if i == unk_id)
        counts.update(encoding.ids)
    vocab = {i: t for t, i in tokenizer.get_vocab().items()}
    return {
        "validation_sentences": len(sentences),
        "validation_tokens": tokens,
        "unk_rate": round(unknown / max(1, tokens), 6),
        "pieces_per_word": round(tokens / max(1, words), 4),
        "whole_word_share": round(whole / max(1, words), 4),
        "top_tokens": [[vocab[i], n] for i, n in counts.most_common(20)],
        "examples": [
            {"sentence": s, "tokens": e.tokens}
            for s, e in zip(sentences[:EXAMPLE_SENTENCES], encodings, strict=False)
        ],
    }
