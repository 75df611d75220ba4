"""Shard stage speed and peak memory, side by side with Google's recipe and with tokenising alone.

    python bench/shard.py [--mb 50] [--big-mb 200] [--num-shards 16] [--big-num-shards 64]
                          [--max-seq-len 128] [--repeats 2] [--profile {auto,always,never}]
                          [--workdir /tmp/bertflow-bench]

One corpus (bench/ingest.py's demo corpus repeated to `--mb`, ingested once into
`<workdir>/tokenizer-store` and reused later, as bench/tokenizer.py does) and one tokenizer
trained on it (`make_tokenizer`, vocabulary 30522) serve every contender:

- (a) the reference, `$BERTFLOW_SHARD_REFERENCE` or `../shared/bench/reference_pretraining_data.py`
  beside the checkout: Google's
  `create_pretraining_data` in plain single-process Python, static masking, dupe factor 1, fed the
  corpus artifact's train split exported to one sentence per line;
- (b) the floor: the train split's sentences read from the corpus Parquet (a row group at a time,
  flattened into Python lists, as the stage reads them) and `Tokenizer.encode_batch`
  (add_special_tokens=False, all threads) over them, nothing else;
- (c) the stage, `make_shards`, with 1 and 2 workers, dynamic masking (its default) and static
  masking with dupe factor 1 (the like-for-like with the reference).

Each contender runs `--repeats` times, rounds interleaved; the fastest run counts. Then peak
memory of the stage (2 workers) on the `--mb` corpus against the `--big-mb` one, which
should be about flat: a map task holds one ~2 MB slice of a corpus file, a write task one shard.

Every contender runs in its own process and reports its own RUSAGE_SELF and RUSAGE_CHILDREN peak
RSS (the stage's pool workers are its children). A child's ru_maxrss starts at its parent's peak,
so this process imports nothing heavy and every corpus, export and tokenizer is made in a child.
When a goal is missed, a 1-worker stage run (everything in one process) is profiled with cProfile.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from child import run_child

REFERENCE_ENV = "BERTFLOW_SHARD_REFERENCE"  # else the shared bench folder beside the checkout
REFERENCE_NAME = "reference_pretraining_data.py"
STORE_DIR = "tokenizer-store"  # shared with bench/tokenizer.py: its corpora are reused
GOAL_VS_REFERENCE = 2 / 3  # the stage with 2 workers takes at most this share of (a)'s time
GOAL_VS_FLOOR = 1.2  # ... and at most this multiple of (b)'s
FLAT_RSS = 1.25  # "flat": the big corpus's peak within this multiple of the small one's


def usage() -> dict[str, float]:
    """Peak RSS and CPU time of this process and of its children, apart."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "self_kb": own.ru_maxrss,
        "children_kb": children.ru_maxrss,
        "cpu_s": sum(u.ru_utime + u.ru_stime for u in (own, children)),
    }


def prepared_corpus(folder: str, size_mb: float, store_dir: str, vocab_size: int) -> dict:
    """Build (or reuse) the corpus folder, its corpus artifact and, when asked, its tokenizer."""
    import pyarrow.parquet as pq
    from tokenizer import ingested_corpus

    from bertflow.pipeline.core.store import ArtifactStore
    from bertflow.pipeline.tokenizer.stage import TokenizerConfig, make_tokenizer

    out = ingested_corpus(folder, size_mb, store_dir)
    out["train_sentences"] = sum(  # values of the sentences column, from the files' metadata
        meta.row_group(g).column(2).num_values
        for meta in (pq.ParquetFile(f).metadata for f in out["train_files"])
        for g in range(meta.num_row_groups)
    )
    if vocab_size:
        store = ArtifactStore(store_dir)
        tokenizer = make_tokenizer(store, out["id"], TokenizerConfig(vocab_size=vocab_size))
        out["tokenizer_id"] = tokenizer.manifest.id
        out["tokenizer_cached"] = tokenizer.cached
        out["tokenizer_json"] = str(store.local_path(tokenizer.manifest.id) / "tokenizer.json")
    return out


def exported_text(out: str, files: list[str]) -> dict[str, int]:
    """The train split as the reference reads it: one sentence per line, a blank line between
    documents."""
    import pyarrow.parquet as pq

    documents = sentences = altered = 0
    with open(out + ".partial", "w", encoding="utf-8") as f:
        for path in files:
            parquet = pq.ParquetFile(path)
            for group in range(parquet.num_row_groups):
                column = parquet.read_row_group(group, columns=["sentences"]).column(0)
                for doc in column.to_pylist():
                    # the reference strips each line and reads an empty one as a document break
                    altered += sum(s != s.strip() or not s.strip() or "\n" in s for s in doc)
                    f.write("\n".join(doc) + "\n\n")
                    documents += 1
                    sentences += len(doc)
    os.replace(out + ".partial", out)
    return {"documents": documents, "sentences": sentences, "altered": altered}


def reference_here(script: str, args: list[str]) -> dict[str, Any]:
    """(a): the reference script, run in this process so that RUSAGE_SELF is its peak."""
    import contextlib
    import io
    import runpy

    sys.argv = [script, *args]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.suppress(SystemExit):
        runpy.run_path(script, run_name="__main__")
    result = json.loads(printed.getvalue().strip().splitlines()[-1])
    return {
        "seconds": result["seconds"],
        "examples": result["instances"],
        "tokens": result["tokens"],
        **usage(),
    }


def floor_here(tokenizer_json: str, method: str, files: list[str]) -> dict[str, Any]:
    """(b): read row groups into Python lists, encode them, count tokens; reading timed apart."""
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    started = time.perf_counter()
    tokenizer = Tokenizer.from_file(tokenizer_json)
    encode = getattr(tokenizer, method)
    reading, sentences, tokens = 0.0, 0, 0
    for path in files:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            read_started = time.perf_counter()
            column = parquet.read_row_group(group, columns=["sentences"]).column(0)
            flat = column.combine_chunks().flatten().to_pylist()
            reading += time.perf_counter() - read_started
            sentences += len(flat)
            tokens += sum(map(len, encode(flat, add_special_tokens=False)))
    return {
        "seconds": time.perf_counter() - started,
        "reading": reading,
        "sentences": sentences,
        "tokens": tokens,
        **usage(),
    }


def stage_here(
    store_dir: str, corpus_id: str, tokenizer_id: str, config: dict[str, Any], top: int
) -> dict[str, Any]:
    """(c): make_shards from scratch (a previous artifact of the same id is removed first, and
    the new one after), under cProfile when `top`, which sees everything only with workers=1."""
    import cProfile
    import io
    import pstats
    import shutil

    from bertflow.pipeline.core.store import ArtifactStore
    from bertflow.pipeline.shards.stage import ShardConfig, make_shards, plan_shards

    store = ArtifactStore(store_dir)
    shard_config = ShardConfig(**config)
    plan = plan_shards(store, corpus_id, tokenizer_id, shard_config)
    shutil.rmtree(store.local_path(plan.artifact_id), ignore_errors=True)  # always build
    profiler = cProfile.Profile() if top else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    published = make_shards(store, corpus_id, tokenizer_id, shard_config)
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - started
    assert not published.cached
    stats = published.manifest.stats
    shutil.rmtree(store.local_path(plan.artifact_id))
    out = {
        "seconds": seconds,
        "examples": stats["train"]["examples"],
        "tokens": stats["train"]["tokens"],
        "validation_examples": stats["validation"]["examples"],
        "shard_rows": stats["train"]["shard_rows"],
        **usage(),
    }
    if profiler:
        listing = io.StringIO()
        profile = pstats.Stats(profiler, stream=listing)
        profile.sort_stats("tottime").print_stats(top)
        out["listing"] = listing.getvalue()
        cumulative = out["cumulative"] = {}  # "file:function": [calls, tottime, cumtime], summed
        for (path, _, name), (_, calls, tottime, cumtime, _) in profile.stats.items():
            key = path.rsplit("/", 1)[-1] + ":" + name
            totals = cumulative.setdefault(key, [0, 0.0, 0.0])
            for k, value in enumerate((calls, tottime, cumtime)):
                totals[k] += value
    return out


def reference_script() -> Path:
    """(a)'s script: `$BERTFLOW_SHARD_REFERENCE`, else the shared bench folder beside the
    checkout; exits naming both when neither is there."""
    beside = Path(__file__).resolve().parents[2] / "shared" / "bench" / REFERENCE_NAME
    path = Path(os.environ.get(REFERENCE_ENV) or beside)
    if not path.is_file():
        sys.exit(f"bench/shard.py: no reference at {path}; set ${REFERENCE_ENV} to its path")
    return path


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all but idle and iowait, steal included)."""
    with open("/proc/stat") as f:
        jiffies = [int(v) for v in f.readline().split()[1:9]]
    idle, iowait = jiffies[3], jiffies[4]
    return (sum(jiffies) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def run_measured(function: str, args: list[Any]) -> dict[str, Any]:
    """`function(*args)` of this file in a fresh process with the libraries' default threads;
    its result, with `others_cpu_s`: CPU the rest of the machine used meanwhile (other load
    skews timings)."""
    env = {k: v for k, v in os.environ.items() if k != "RAYON_NUM_THREADS"}
    busy = busy_cpu_seconds()
    result = run_child("shard", function, args, env)
    busy = busy_cpu_seconds() - busy
    if "cpu_s" in result:
        result["others_cpu_s"] = max(0.0, busy - result["cpu_s"])
    return result


def prepare_corpus(workdir: Path, size_mb: float, vocab_size: int) -> dict[str, Any]:
    """Build (or reuse) the corpus, its artifact and, unless vocab_size is 0, its tokenizer."""
    folder = workdir / f"corpus-{size_mb:g}mb"
    args = [str(folder), size_mb, str(workdir / STORE_DIR), vocab_size]
    return run_measured("prepared_corpus", args)


def export_text(workdir: Path, corpus: dict[str, Any]) -> tuple[Path, dict[str, Any] | None]:
    """The train split as one sentence per line (reused when exported before); its summary."""
    path = workdir / f"{corpus['id']}-train.txt"
    if path.exists():
        return path, None
    return path, run_measured("exported_text", [str(path), corpus["train_files"]])


def run_reference(workdir: Path, text: Path, tokenizer_json: str, max_seq_len: int) -> dict:
    args = [
        "--input",
        str(text),
        "--tokenizer",
        tokenizer_json,
        "--output",
        str(workdir / "reference.parquet"),
        "--max-seq-length",
        str(max_seq_len),
        "--dupe-factor",
        "1",
    ]
    return run_measured("reference_here", [str(reference_script()), args])


def run_floor(corpus: dict[str, Any], method: str) -> dict[str, Any]:
    return run_measured("floor_here", [corpus["tokenizer_json"], method, corpus["train_files"]])


def run_stage(
    workdir: Path, corpus_id: str, tokenizer_id: str, config: dict[str, Any], profile_top: int = 0
) -> dict[str, Any]:
    store_dir = str(workdir / STORE_DIR)
    return run_measured("stage_here", [store_dir, corpus_id, tokenizer_id, config, profile_top])


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of repeated runs (timing noise only adds), with the largest peaks of all."""
    fastest = min(runs, key=lambda r: r["seconds"])
    peaks = {key: max(r[key] for r in runs) for key in ("self_kb", "children_kb")}
    return {**fastest, **peaks, "all_seconds": [r["seconds"] for r in runs]}


def speed_runs(args: argparse.Namespace, corpus: dict[str, Any], text: Path) -> dict[str, dict]:
    """Every contender of the speed table, `args.repeats` rounds interleaved so that drifting
    machine load hits all alike; the best of each."""
    base = {"max_seq_len": args.max_seq_len, "num_shards": args.num_shards, "dupe_factor": 1}
    contenders = {
        "a": lambda: run_reference(args.workdir, text, corpus["tokenizer_json"], args.max_seq_len),
        "b": lambda: run_floor(corpus, "encode_batch"),
        "b'": lambda: run_floor(corpus, "encode_batch_fast"),
    }
    for masking in ("dynamic", "static"):
        for workers in (1, 2):
            config = {**base, "workers": workers, "masking": masking}
            contenders[f"{workers}-{masking}"] = partial(
                run_stage, args.workdir, corpus["id"], corpus["tokenizer_id"], config
            )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, run in contenders.items():
            runs[name].append(run())
    return {name: best_of(repeated) for name, repeated in runs.items()}


def mb(kb: int) -> str:
    return f"{kb / 1024:,.0f}"


def print_speed(rows: list[tuple[str, dict[str, Any]]], reference: dict, floor: dict) -> None:
    print(
        "| contender | seconds | x (a) | x (b) | examples | tokens"
        " | peak RSS MB: process (SELF) | peak RSS MB: largest child (CHILDREN)"
        " | CPU s (process + children) | other processes' CPU s meanwhile"
        " | seconds, every run |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, run in rows:
        examples = f"{run['examples']:,}" if "examples" in run else "—"
        print(
            f"| {name} | {run['seconds']:.1f} | {run['seconds'] / reference['seconds']:.2f}"
            f" | {run['seconds'] / floor['seconds']:.2f} | {examples} | {run['tokens']:,}"
            f" | {mb(run['self_kb'])} | {mb(run['children_kb'])} | {run['cpu_s']:.1f}"
            f" | {run['others_cpu_s']:.1f} | {', '.join(f'{s:.1f}' for s in run['all_seconds'])} |"
        )
        if run is floor:
            share = floor["reading"] / floor["seconds"]
            print(
                f"| › of which reading Parquet into Python lists | {floor['reading']:.1f}"
                f" | | | | {share:.0%} of (b) | | | | | |"
            )


def print_goals(stage: dict[str, dict[str, Any]], reference: dict, floor: dict) -> bool:
    """Print each goal for the 2-worker runs and whether it is met; True when all are."""
    print(
        f"\ngoals for (c) with 2 workers: <= {GOAL_VS_REFERENCE:.2f} x (a)'s time (2/3)"
        f" and <= {GOAL_VS_FLOOR:.1f} x (b)'s time"
    )
    all_met = True
    goals = (("a", reference, GOAL_VS_REFERENCE), ("b", floor, GOAL_VS_FLOOR))
    for masking in ("dynamic", "static"):
        seconds = stage[f"2-{masking}"]["seconds"]
        for label, anchor, goal in goals:
            ratio = seconds / anchor["seconds"]
            met = ratio <= goal
            all_met &= met
            verdict = "met" if met else "MISSED"
            print(f"- {masking} masking: {ratio:.2f} x ({label}), goal <= {goal:.2f}: {verdict}")
    return all_met


def print_memory(rows: list[tuple[dict[str, Any], int, dict[str, Any]]]) -> None:
    print("\n## peak memory of the stage, 2 workers, dynamic masking: small vs big corpus\n")
    print(
        "| corpus MB | train tokens | num_shards | train rows per shard | seconds"
        " | stage process MB (SELF) | largest pool worker MB (CHILDREN) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for corpus, num_shards, run in rows:
        shard_rows = run["shard_rows"]
        print(
            f"| {corpus['bytes'] / 1e6:.0f} | {run['tokens']:,} | {num_shards}"
            f" | {shard_rows['min']:,}–{shard_rows['max']:,} | {run['seconds']:.1f}"
            f" | {mb(run['self_kb'])} | {mb(run['children_kb'])} |"
        )
    (_, _, small), (_, _, big) = rows
    for label, key in (("stage process", "self_kb"), ("largest pool worker", "children_kb")):
        ratio = big[key] / small[key]
        verdict = "flat: met" if ratio <= FLAT_RSS else "NOT flat: MISSED"
        print(f"- {label}: big / small = {ratio:.2f} (goal <= {FLAT_RSS}: {verdict})")


# (profile key, cumulative or own time, what it is) of the stage's steps, for the time split.
# pyarrow's Cython methods (to_pylist, slicing) are invisible to cProfile: their time is the own
# time of the Python function that calls them.
PROFILED = [
    ("shards.py:_map_file", "cum", "map tasks, all"),
    ("shards.py:_tokenized_documents", "cum", "› read + tokenise one slice, split into documents"),
    ("core.py:read_row_group", "cum", "›› Parquet row group read"),
    (
        "~:<method 'encode_batch_fast' of 'tokenizers.Tokenizer' objects>",
        "cum",
        "›› encode_batch_fast",
    ),
    ("shards.py:<listcomp>", "cum", "›› Encoding.ids -> lists (list comprehensions)"),
    ("shards.py:_tokenized_documents", "own", "›› own time: Arrow -> Python lists, documents"),
    ("examples.py:document_examples", "cum", "› pair building (Python)"),
    ("shards.py:add", "cum", "› spill pieces: arrays, masking, Arrow IPC writes"),
    ("shards.py:_mask", "cum", "›› of which static masking"),
    ("shards.py:_write_shard", "cum", "write tasks, all (balance, shuffle, Parquet)"),
]


def print_profile(run: dict[str, Any], label: str) -> None:
    print(f"\n## where the stage's time goes: {label}, under cProfile\n")
    print(f"profiled wall time {run['seconds']:.1f} s (cProfile adds overhead to Python calls)\n")
    print("| step | calls | seconds | share |")
    print("|---|---:|---:|---:|")
    cumulative = run["cumulative"]
    for key, which, name in PROFILED:
        if key in cumulative:
            calls, own, cum = cumulative[key]
            seconds = cum if which == "cum" else own
            print(f"| {name} | {calls:,} | {seconds:.1f} | {seconds / run['seconds']:.0%} |")
    print("\ntop entries by tottime:\n\n```")
    listing = run["listing"].strip().splitlines()
    start = next(i for i, line in enumerate(listing) if "ncalls" in line)
    print("\n".join(listing[start:]))
    print("```")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=50, help="corpus of the speed table")
    parser.add_argument("--big-mb", type=float, default=200, help="big corpus of the memory table")
    parser.add_argument("--num-shards", type=int, default=16, help="train shards, --mb corpus")
    parser.add_argument("--big-num-shards", type=int, default=64, help="train shards, big corpus")
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=30522)
    parser.add_argument(
        "--profile",
        choices=["auto", "always", "never"],
        default="auto",
        help="profile a workers=1 stage run: auto = when a goal is missed",
    )
    parser.add_argument("--profile-top", type=int, default=30, help="entries of the listing")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each; the fastest counts")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bertflow-bench"))
    args = parser.parse_args()
    reference_script()  # before any work: fail fast when it is not there
    args.workdir.mkdir(parents=True, exist_ok=True)

    corpus = prepare_corpus(args.workdir, args.mb, args.vocab_size)
    text, exported = export_text(args.workdir, corpus)
    reused = "reused" if corpus["cached"] else "ingested"
    trained = "reused" if corpus["tokenizer_cached"] else "trained"
    print(
        f"corpus: {corpus['files']} files, {corpus['bytes'] / 1e6:.1f} MB ({reused}),"
        f" {corpus['id']}; train split {corpus['train_sentences']:,} sentences"
    )
    print(f"tokenizer: {corpus['tokenizer_id']} ({trained}), vocab {args.vocab_size}")
    if exported:
        print(
            f"exported for (a): {exported['documents']:,} documents,"
            f" {exported['sentences']:,} sentences; {exported['altered']} lines the"
            f" reference's strip() would change"
        )
    print(
        f"max_seq_len {args.max_seq_len}, num_shards {args.num_shards}, {os.cpu_count()} cores;"
        " tokenizers threads: library default (all cores) everywhere except inside the"
        " stage's pool workers (1 each)\n",
        flush=True,
    )

    runs = speed_runs(args, corpus, text)
    reference, floor = runs["a"], runs["b"]
    stage = {name: run for name, run in runs.items() if name[0].isdigit()}

    print(
        f"## one corpus ({corpus['bytes'] / 1e6:.0f} MB), same tokenizer, max_seq_len"
        f" {args.max_seq_len}, dupe factor 1; best of {args.repeats} runs each\n"
    )
    rows = [
        ("(a) reference: Google's recipe in Python, 1 process, static masking", reference),
        ("(b) floor: read Parquet + `encode_batch`, all threads", floor),
        (
            "(b') read Parquet + `encode_batch_fast` (what the stage calls; for information)",
            runs["b'"],
        ),
        ("(c) stage, 1 worker, dynamic masking", stage["1-dynamic"]),
        ("(c) stage, 2 workers, dynamic masking", stage["2-dynamic"]),
        ("(c) stage, 1 worker, static masking", stage["1-static"]),
        ("(c) stage, 2 workers, static masking", stage["2-static"]),
    ]
    print_speed(rows, reference, floor)
    validation = stage["2-dynamic"]["validation_examples"]
    print(
        f"\nexamples and tokens are the train split's (tokens of (b): sentence tokens, no"
        f" specials); the stage also builds the validation split ({validation:,} examples)"
        " within its time. With 1 worker the stage runs in-process and tokenizers uses all"
        " cores; with 2, each pool worker tokenises on 1 thread."
    )
    all_met = print_goals(stage, reference, floor)

    big = prepare_corpus(args.workdir, args.big_mb, 0)
    big_config = {"max_seq_len": args.max_seq_len, "num_shards": args.big_num_shards, "workers": 2}
    big_run = run_stage(args.workdir, big["id"], corpus["tokenizer_id"], big_config)
    small_run = stage["2-dynamic"]
    print_memory([(corpus, args.num_shards, small_run), (big, args.big_num_shards, big_run)])
    print(f"(both with the tokenizer of the {corpus['bytes'] / 1e6:.0f} MB corpus)")

    if args.profile == "always" or (args.profile == "auto" and not all_met):
        config = {"max_seq_len": args.max_seq_len, "num_shards": args.num_shards, "workers": 1}
        profiled = run_stage(
            args.workdir, corpus["id"], corpus["tokenizer_id"], config, args.profile_top
        )
        print_profile(profiled, "1 worker, dynamic masking")


if __name__ == "__main__":
    main()
