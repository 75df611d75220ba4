"""Tokenizer training time and peak memory, side by side with `tokenizers` training alone.

    python bench/tokenizer.py [--sizes 50 100 200] [--sample-mb 50] [--vocab-size 30522]
                              [--threads 2] [--repeats 3] [--workdir /tmp/bertflow-bench]

Corpora are the demo corpus repeated to each size (bench/ingest.py's builder), ingested once into
a store under the workdir and reused by later runs. Every contender runs in its own process, which
reports its own peak RSS. Tables:

- overhead, on the smallest corpus with no sampling: the stage (`make_tokenizer`) against the
  library alone (pyarrow row groups of the same Parquet files fed to `train_from_iterator`, same
  vocabulary size, trainer settings and thread count), and where the stage's time goes;
- sample cap: the stage with `--sample-mb` on every corpus size. Past the cap the sampled bytes, the
  trainer's work and peak memory should stay about flat; only reading the whole corpus grows.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from child import run_child

# A child's ru_maxrss starts at its parent's peak (Linux keeps it across fork and exec), so this
# process stays small: it imports nothing heavy at module level, and building and ingesting
# corpora, the library and the stage all run in children (bench/child.py), importing there.


def ingested_corpus(folder: str, size_mb: float, store_dir: str) -> dict[str, Any]:
    """Build (or reuse) the corpus folder and ingest it (or find it ingested); a summary."""
    from ingest import build_corpus

    from bertflow.pipeline.core.store import ArtifactStore
    from bertflow.pipeline.ingest.corpus import split_files
    from bertflow.pipeline.ingest.stage import IngestConfig, ingest

    n_files, n_bytes = build_corpus(Path(folder), size_mb)
    store = ArtifactStore(store_dir)
    published = ingest(store, IngestConfig(sources=[folder], workers=2))
    corpus = published.manifest
    root = store.local_path(corpus.id)
    return {
        "id": corpus.id,
        "files": n_files,
        "bytes": n_bytes,
        "cached": published.cached,
        "train_characters": corpus.stats["characters"]["train"],
        "train_files": [str(root / relpath) for relpath in split_files(corpus, "train")],
    }


def library_here(vocab_size: int, vocab_out: str, files: list[str]) -> dict[str, Any]:
    """The library alone: read row groups, flatten the sentence lists, train on batches."""
    import resource

    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    from bertflow.pipeline.core.literals import SPECIAL_TOKENS, UNK

    imported_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    characters = 0

    def batches() -> Iterator[list[str]]:
        nonlocal characters
        for path in files:
            parquet = pq.ParquetFile(path)
            for i in range(parquet.num_row_groups):
                column = parquet.read_row_group(i, columns=["sentences"]).column(0)
                sentences = pc.list_flatten(column).to_pylist()
                characters += sum(map(len, sentences))
                yield sentences

    started = time.perf_counter()
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        limit_alphabet=1000,
        show_progress=False,
        special_tokens=list(SPECIAL_TOKENS),
    )
    tokenizer.train_from_iterator(batches(), trainer=trainer)
    seconds = time.perf_counter() - started
    vocab = tokenizer.get_vocab()
    with open(vocab_out, "w", encoding="utf-8") as f:
        f.writelines(t + "\n" for t in sorted(vocab, key=vocab.__getitem__))
    return {
        "seconds": seconds,
        "characters": characters,
        "vocab_size": len(vocab),
        "imported_kb": imported_kb,
        "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def stage_here(
    store_dir: str, corpus_id: str, vocab_size: int, sample_bytes: int, threads: int
) -> dict[str, Any]:
    """The stage, its module-level steps wrapped in timers (train() looks them up at call time)."""
    import resource
    import shutil

    import bertflow.pipeline.tokenizer.stage as stage
    from bertflow.pipeline.core.store import ArtifactStore

    imported_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    phases: dict[str, float] = {}
    peaks_kb: dict[str, int] = {}
    reads: list[float] = []

    def timed(name: str, fn: Callable) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - started
                peaks_kb[name] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        return wrapper

    def timed_reads(fn: Callable) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            reads.append(0.0)  # seconds spent producing documents, one entry per pass
            documents = fn(*args, **kwargs)
            while True:
                started = time.perf_counter()
                item = next(documents, None)
                reads[-1] += time.perf_counter() - started
                if item is None:
                    return
                yield item

        return wrapper

    stage.char_alphabet = timed("alphabet", stage.char_alphabet)
    stage.canonical = timed("canonical", stage.canonical)
    stage.validation_stats = timed("validation", stage.validation_stats)
    stage.iter_documents = timed_reads(stage.iter_documents)
    store = ArtifactStore(store_dir)
    config = stage.TokenizerConfig(
        vocab_size=vocab_size, sample_bytes=sample_bytes, threads=threads
    )
    tokenizer_id = stage.plan_tokenizer(store, corpus_id, config).artifact_id
    shutil.rmtree(store.local_path(tokenizer_id), ignore_errors=True)  # always train, never reuse
    started = time.perf_counter()
    published = stage.make_tokenizer(store, corpus_id, config)
    seconds = time.perf_counter() - started
    assert not published.cached
    stats = published.manifest.stats
    return {
        "seconds": seconds,
        "stats": {k: v for k, v in stats.items() if not isinstance(v, list)},
        "phases": phases,
        "peaks_kb": peaks_kb,
        "reads": reads,
        "vocab_txt": str(store.local_path(tokenizer_id) / "vocab.txt"),
        "imported_kb": imported_kb,
        "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def threads_env(threads: int) -> dict[str, str]:
    """This environment with the libraries' threads pinned by RAYON_NUM_THREADS."""
    return {**os.environ, "RAYON_NUM_THREADS": str(threads)}


def prepare_corpus(workdir: Path, size_mb: float) -> dict[str, Any]:
    """Build (or reuse) the corpus folder and its corpus artifact; a summary of both."""
    folder = workdir / f"corpus-{size_mb:g}mb"
    args = [str(folder), size_mb, str(workdir / "tokenizer-store")]
    return run_child("tokenizer", "ingested_corpus", args, threads_env(1))


def run_library(corpus: dict[str, Any], vocab_size: int, threads: int, vocab_out: Path) -> dict:
    args = [vocab_size, str(vocab_out), corpus["train_files"]]
    return run_child("tokenizer", "library_here", args, threads_env(threads))


def run_stage(
    workdir: Path, corpus: dict[str, Any], vocab_size: int, sample_bytes: int, threads: int
) -> dict[str, Any]:
    store_dir = workdir / "tokenizer-store"
    args = [str(store_dir), corpus["id"], vocab_size, sample_bytes, threads]
    return run_child("tokenizer", "stage_here", args, threads_env(threads))


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of repeated runs (timing noise only adds), with the largest peak RSS of all."""
    fastest = min(runs, key=lambda r: r["seconds"])
    return {**fastest, "peak_kb": max(r["peak_kb"] for r in runs), "repeats": len(runs)}


def vocab_overlap(ours: Path, theirs: Path) -> float:
    """Share of the stage's tokens that the library's vocabulary also has."""
    a = set(ours.read_text(encoding="utf-8").splitlines())
    b = set(theirs.read_text(encoding="utf-8").splitlines())
    return len(a & b) / max(1, len(a))


def stage_phases(run: dict[str, Any]) -> list[tuple[str, float, int | None]]:
    """(step, seconds, peak RSS kB by its end) of the stage; remainders are computed, not timed.

    The canonical rebuild ends the training pass, so its peak is the training pass's too.
    """
    phases, peaks, reads, stats = run["phases"], run["peaks_kb"], run["reads"], run["stats"]
    trainer = stats["training_seconds"] - phases["alphabet"] - phases["canonical"]
    rest = run["seconds"] - stats["training_seconds"] - phases["validation"]
    validation = f"validation stats ({stats['validation_sentences']:,} sentences)"
    return [
        ("pass 1: alphabet (read + numpy char count)", phases["alphabet"], peaks["alphabet"]),
        ("  of which reading Parquet into Python lists", reads[0], None),
        ("pass 2: read + train_from_iterator", trainer, peaks["canonical"]),
        ("  of which reading Parquet into Python lists", reads[1], None),
        ("rebuild from the vocabulary (canonical)", phases["canonical"], None),
        (validation, phases["validation"], peaks["validation"]),
        ("plan, cache check, write files, publish", rest, run["peak_kb"]),
        ("total", run["seconds"], None),
    ]


def print_overhead(corpus: dict[str, Any], library: dict, stage: dict, overlap: float) -> None:
    chars = corpus["train_characters"] / 1e6
    print(
        f"## overhead vs the library alone ({chars:.1f} M train characters, no sampling;"
        f" best of {library['repeats']} runs each)\n"
    )
    print(
        "| contender | seconds | x library | peak RSS MB | RSS x library | RSS after imports MB"
        " | characters trained | vocab |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    stats = stage["stats"]
    rows = [
        ("tokenizers alone (pyarrow row groups)", library["seconds"], library, library),
        ("bertflow stage: training only", stats["training_seconds"], stage, None),
        ("bertflow stage: whole make_tokenizer", stage["seconds"], stage, None),
    ]
    for name, seconds, run, lib in rows:
        trained = lib["characters"] if lib else stats["sampled_bytes"]
        vocab = lib["vocab_size"] if lib else stats["vocab_size"]
        print(
            f"| {name} | {seconds:.1f} | {seconds / library['seconds']:.2f}"
            f" | {run['peak_kb'] / 1024:,.0f} | {run['peak_kb'] / library['peak_kb']:.2f}"
            f" | {run['imported_kb'] / 1024:,.0f}"
            f" | {trained:,} | {vocab:,} |"
        )
    ratio = stats["training_seconds"] / library["seconds"]
    verdict = "met" if ratio <= 1.10 else "MISSED"
    print(f"\nstage training / library: {ratio:.2f} (goal <= 1.10: {verdict})")
    print(f"stage tokens also in the library's vocabulary: {overlap:.1%}\n")
    print("time split of the fastest stage run:\n")
    print("| stage step | seconds | share | RSS high-water at its end MB |")
    print("|---|---:|---:|---:|")
    for name, seconds, peak_kb in stage_phases(stage):
        peak = f"{peak_kb / 1024:,.0f}" if peak_kb else ""
        print(f"| {name} | {seconds:.1f} | {seconds / stage['seconds']:.0%} | {peak} |")


def print_sample_cap(sample_mb: float, runs: list[tuple[dict[str, Any], dict]]) -> None:
    repeats = runs[0][1]["repeats"]
    print(f"\n## sample cap ({sample_mb:g} MB): the stage on growing corpora (best of {repeats})\n")
    print(
        "| corpus MB | train M chars | sample fraction | sampled M chars | seconds"
        " | pass 1 s | pass 2 s | reading (both passes) s | peak RSS MB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for corpus, run in runs:
        stats = run["stats"]
        print(
            f"| {corpus['bytes'] / 1e6:.0f} | {corpus['train_characters'] / 1e6:.1f}"
            f" | {stats['sample_fraction']:.3f} | {stats['sampled_bytes'] / 1e6:.1f}"
            f" | {run['seconds']:.1f} | {run['phases']['alphabet']:.1f}"
            f" | {stage_phases(run)[2][1]:.1f} | {sum(run['reads'][:2]):.1f}"
            f" | {run['peak_kb'] / 1024:,.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[50, 100, 200])
    parser.add_argument("--sample-mb", type=float, default=50)
    parser.add_argument("--vocab-size", type=int, default=30522)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the fastest counts")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bertflow-bench"))
    args = parser.parse_args()

    corpora = []
    for size in sorted(args.sizes):
        corpus = prepare_corpus(args.workdir, size)
        corpora.append(corpus)
        reused = "reused" if corpus["cached"] else "ingested"
        print(f"corpus: {corpus['files']} files, {corpus['bytes'] / 1e6:.1f} MB ({reused})")
    print(f"threads: {args.threads}, vocab size: {args.vocab_size}\n", flush=True)

    smallest = corpora[0]
    library_vocab = args.workdir / "library-vocab.txt"
    no_cap = 2 * smallest["train_characters"]  # a sample fraction of 1: the library's text
    library_runs, stage_runs = [], []
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
        library_runs.append(run_library(smallest, args.vocab_size, args.threads, library_vocab))
        stage_runs.append(run_stage(args.workdir, smallest, args.vocab_size, no_cap, args.threads))
    library, stage = best_of(library_runs), best_of(stage_runs)
    overlap = vocab_overlap(Path(stage["vocab_txt"]), library_vocab)
    print_overhead(smallest, library, stage, overlap)

    sample_bytes = int(args.sample_mb * 1e6)
    runs = []
    for corpus in corpora:
        repeated = [
            run_stage(args.workdir, corpus, args.vocab_size, sample_bytes, args.threads)
            for _ in range(args.repeats)
        ]
        runs.append((corpus, best_of(repeated)))
    print_sample_cap(args.sample_mb, runs)


if __name__ == "__main__":
    main()
