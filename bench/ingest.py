"""Ingest throughput and peak memory, side by side with the floor of reading + segmenting only.

    python bench/ingest.py [--mb 100] [--big-mb 400] [--no-break-mb 20]
                           [--workdir /tmp/bertflow-bench]

The corpus is the demo corpus repeated until it reaches the size asked for; each copy's documents
get a distinct first line so deduplication keeps them all. Rows of the table:

- floor: read every file and run only blingfire's sentence splitter (1 and 2 processes);
- ingest: the whole stage (parse, clean, segment, hash, spill, dedup, write Parquet, hash files);
- peak memory of the stage for the small and the big corpus (largest single process, and the sum
  of the main process and one worker), which should be about the same: memory is bounded;
- text without a sentence break (one file holding a single word of --no-break-mb MB, which every
  cleaning step must handle in linear time) against prose of the same size, both with 1 worker
  (one document cannot be split between workers). Goal: at most GOAL_NO_BREAK x prose's time.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import time
from pathlib import Path

from blingfire import text_to_sentences
from child import run_child

from bertflow.pipeline.ingest.demo_task import pretraining_speeches

GOAL_NO_BREAK = 1.5  # text with no break takes at most this many times prose's seconds


def build_corpus(folder: Path, target_mb: float) -> tuple[int, int]:
    """Copies of the demo corpus, each document with its own first line; returns (files, bytes)."""
    if (folder / "done").exists():
        files = sorted(folder.rglob("*.txt"))
        return len(files), sum(f.stat().st_size for f in files)
    shutil.rmtree(folder, ignore_errors=True)
    speeches = sorted(pretraining_speeches())
    texts = [(p.name, p.read_text(encoding="utf-8")) for p in speeches]
    total, files, copy = 0, 0, 0
    while total < target_mb * 1e6:
        out = folder / f"copy{copy:03d}"
        out.mkdir(parents=True)
        for name, text in texts:
            data = f"Copy {copy} of this address.\n\n{text}".encode()
            (out / name).write_bytes(data)
            total += len(data)
            files += 1
        copy += 1
    (folder / "done").write_text("")
    return files, total


def build_no_break(folder: Path, target_mb: float) -> int:
    """One file of one word, `target_mb` MB of letters with no space or terminator; its bytes."""
    if not (folder / "done").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        word = ("abcdefghij" * 100_000).encode()  # 1 MB
        with open(folder / "word.txt", "wb") as f:
            for _ in range(round(target_mb)):
                f.write(word)
        (folder / "done").write_text("")
    return (folder / "word.txt").stat().st_size


def _segment_file(path: Path) -> int:
    return len(text_to_sentences(path.read_text(encoding="utf-8")).split("\n"))


def floor(folder: Path, processes: int) -> float:
    """Seconds to read every file and split it into sentences, nothing else, in a child process:
    a child's ru_maxrss starts at its parent's, so the parent stays small."""
    return run_child("ingest", "floor_here", [str(folder), processes])


def floor_here(folder: str, processes: int) -> float:
    files = sorted(Path(folder).rglob("*.txt"))
    started = time.perf_counter()
    if processes == 1:
        for f in files:
            _segment_file(f)
    else:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            pool.map(_segment_file, files, chunksize=16)
    return time.perf_counter() - started


def ingest_here(folder: str, store: str, workers: int) -> dict:
    """The stage on `folder` into an empty `store`, then again (cached); seconds and peak RSS."""
    import resource

    from bertflow.pipeline.core.store import ArtifactStore
    from bertflow.pipeline.ingest.stage import IngestConfig, ingest

    config = IngestConfig(sources=[folder], workers=workers)
    started = time.perf_counter()
    published = ingest(ArtifactStore(store), config)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    assert ingest(ArtifactStore(store), config).cached
    cached_seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "cached_seconds": cached_seconds,
        "documents": published.manifest.stats["documents_read"],
        "self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "workers_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }


def run_ingest(folder: Path, store: Path, workers: int) -> dict:
    shutil.rmtree(store, ignore_errors=True)
    return run_child("ingest", "ingest_here", [str(folder), str(store), workers])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=100)
    parser.add_argument("--big-mb", type=float, default=400)
    parser.add_argument("--no-break-mb", type=float, default=20)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bertflow-bench"))
    args = parser.parse_args()

    small = args.workdir / f"corpus-{args.mb:g}mb"
    big = args.workdir / f"corpus-{args.big_mb:g}mb"
    n_files, n_bytes = build_corpus(small, args.mb)
    mb = n_bytes / 1e6
    print(f"corpus: {n_files} files, {mb:.1f} MB (demo corpus repeated)\n", flush=True)

    rows = []
    for processes in (1, 2):
        seconds = floor(small, processes)
        rows.append((f"floor: read + blingfire only, {processes} proc", seconds, None, None))
    ingest_runs = {}
    for workers in (1, 2):
        r = run_ingest(small, args.workdir / "store", workers)
        ingest_runs[workers] = r
        rows.append((f"bertflow ingest, {workers} worker(s)", r["seconds"], r["documents"], r))

    floor_1 = rows[0][1]
    print("| run | seconds | MB/s | documents/s | x floor (1 proc) | cached rerun s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, seconds, docs, run in rows:
        docs_s = f"{docs / seconds:,.0f}" if docs else "—"
        cached = f"{run['cached_seconds']:.2f}" if run else "—"
        print(
            f"| {name} | {seconds:.1f} | {mb / seconds:.1f} | {docs_s} | {seconds / floor_1:.2f}"
            f" | {cached} |"
        )

    big_files, big_bytes = build_corpus(big, args.big_mb)
    big_run = run_ingest(big, args.workdir / "store", 2)
    print("\npeak memory, 2 workers (largest process; main process + one worker):")
    print("| input | MB | seconds | main process MB | largest worker MB |")
    print("|---|---:|---:|---:|---:|")
    for label, size, r in (("small", mb, ingest_runs[2]), ("big", big_bytes / 1e6, big_run)):
        print(
            f"| {label} | {size:.0f} | {r['seconds']:.1f} | {r['self_kb'] / 1024:.0f}"
            f" | {r['workers_kb'] / 1024:.0f} |"
        )

    no_break = args.workdir / f"no-break-{args.no_break_mb:g}mb"
    word_bytes = build_no_break(no_break, args.no_break_mb)
    prose = args.workdir / f"corpus-{args.no_break_mb:g}mb"
    _, prose_bytes = build_corpus(prose, args.no_break_mb)
    print("\ntext without a sentence break against prose, 1 worker:")
    print("| input | MB | seconds | MB/s | x prose |")
    print("|---|---:|---:|---:|---:|")
    store = args.workdir / "store"
    runs = [
        ("prose (demo corpus)", prose_bytes, run_ingest(prose, store, 1)),
        ("one word, no break", word_bytes, run_ingest(no_break, store, 1)),
    ]
    prose_s_per_mb = runs[0][2]["seconds"] / (prose_bytes / 1e6)
    for label, size, r in runs:
        ratio = r["seconds"] / (size / 1e6) / prose_s_per_mb
        print(
            f"| {label} | {size / 1e6:.1f} | {r['seconds']:.1f} | {size / 1e6 / r['seconds']:.1f}"
            f" | {ratio:.2f} |"
        )
    ratio = runs[1][2]["seconds"] / (word_bytes / 1e6) / prose_s_per_mb
    met = "met" if ratio <= GOAL_NO_BREAK else "NOT met"
    print(f"\ngoal: no break at most {GOAL_NO_BREAK}x prose's seconds per MB: {ratio:.2f}x, {met}")
    shutil.rmtree(args.workdir / "store", ignore_errors=True)


if __name__ == "__main__":
    main()
