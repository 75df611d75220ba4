"""The `bertflow` commands that read or tidy the store and run no flow: `export`, `artifacts`
(ls, show, verify, gc) and `lineage`. Apart from `cli.py`, which runs the stages on Prefect."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bertflow.pipeline.core.lineage import lineage, render, summarize
from bertflow.pipeline.core.manifest import FORMAT_VERSIONS
from bertflow.pipeline.core.store import ArtifactStore


def add_store_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """`export`, `artifacts` and `lineage` as subcommands of `commands`, with `common`'s
    options."""
    export = commands.add_parser(
        "export",
        parents=[common],
        help="write a model's HuggingFace folder",
        description="Copy a model artifact's HuggingFace export (config.json, model.safetensors, "
        "tokenizer files) into a folder that transformers' from_pretrained loads, with a model "
        "card (README.md) of its recipe, lineage and latest evaluation.",
    )
    export.add_argument("model", metavar="MODEL_ID")
    export.add_argument("--out", required=True, type=Path, metavar="DIR")
    export.set_defaults(handler=_export)

    artifacts = commands.add_parser(
        "artifacts", parents=[common], help="list, show and verify artifacts; clear leftovers"
    )
    artifact_commands = artifacts.add_subparsers(
        dest="artifacts_command", required=True, metavar="ACTION"
    )
    ls = artifact_commands.add_parser("ls", parents=[common], help="list artifacts")
    ls.add_argument("--kind", choices=sorted(FORMAT_VERSIONS))
    add_json(ls)
    ls.set_defaults(handler=_artifacts_ls)
    show = artifact_commands.add_parser(
        "show", parents=[common], help="print an artifact's manifest"
    )
    show.add_argument("id")
    add_json(show)
    show.set_defaults(handler=_artifacts_show)
    verify = artifact_commands.add_parser(
        "verify", parents=[common], help="re-hash an artifact's files against its manifest"
    )
    verify.add_argument("id")
    verify.set_defaults(handler=_artifacts_verify)
    gc = artifact_commands.add_parser(
        "gc",
        parents=[common],
        help="remove what crashed runs left (staging and spill folders no live run holds)",
    )
    gc.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    gc.set_defaults(handler=_artifacts_gc)

    lineage_cmd = commands.add_parser(
        "lineage", parents=[common], help="everything upstream of an artifact, down to raw inputs"
    )
    lineage_cmd.add_argument("id")
    add_json(lineage_cmd)
    lineage_cmd.set_defaults(handler=_lineage)


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print the result as one JSON line, last"
    )


def store_of(args: argparse.Namespace) -> ArtifactStore:
    return ArtifactStore(getattr(args, "store", None))


def _export(args: argparse.Namespace) -> int:
    from bertflow.model.evaluation.card import card_evaluation, latest_evaluation
    from bertflow.model.export import EXPORT_FILES
    from bertflow.model.model_card import MODEL_CARD_FILE, ModelFacts, render_model_card

    store = store_of(args)
    manifest = store.require(args.model, kind="model")
    hf = manifest.layout["hf"]
    store.check_intact(manifest, [f"{hf}/{name}" for name in EXPORT_FILES])
    args.out.mkdir(parents=True, exist_ok=True)
    for name in EXPORT_FILES:
        with store.open(manifest.id, f"{hf}/{name}") as src:
            (args.out / name).write_bytes(src.read())
    evaluation = latest_evaluation(store, manifest.id)  # a later artifact than the model's hf/
    scores = card_evaluation(evaluation) if evaluation is not None else None
    card = render_model_card(store, ModelFacts.of(manifest), scores)
    (args.out / MODEL_CARD_FILE).write_text(card, encoding="utf-8")
    print(f"{manifest.id}: wrote {', '.join(EXPORT_FILES)} and {MODEL_CARD_FILE} to {args.out}")
    print(
        "  model card: "
        + (
            f"with the scores of {evaluation.id}"
            if evaluation
            else "no evaluation of this model in the store yet"
        )
    )
    print(
        "  load with transformers: BertForPreTraining.from_pretrained(DIR), "
        "AutoTokenizer.from_pretrained(DIR)"
    )
    return 0


def _artifacts_ls(args: argparse.Namespace) -> int:
    store = store_of(args)
    manifests, problems = store.scan(args.kind)
    for problem in problems:
        print(f"bertflow artifacts ls: skipped a broken entry: {problem}", file=sys.stderr)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "id": m.id,
                        "kind": m.kind,
                        "created": m.created,
                        "uri": store.uri(m.id),
                        "upstream": m.upstream,
                    }
                    for m in manifests
                ]
            )
        )
        return 0
    if not manifests:
        print(f"no artifacts in {store.url}")
    for m in manifests:
        print(f"{m.id}  {m.created}  {summarize(m)}")
    return 0


def _artifacts_show(args: argparse.Namespace) -> int:
    store = store_of(args)
    manifest = store.require(args.id)
    data = manifest.model_dump(mode="json")
    data["uri"] = store.uri(manifest.id)
    local = store.local_path(manifest.id)
    data["local_path"] = str(local) if local else None
    if args.json:
        print(json.dumps(data))
    else:
        print(json.dumps(data, indent=2))
    return 0


def _artifacts_verify(args: argparse.Namespace) -> int:
    store = store_of(args)
    manifest = store.require(args.id)
    problems = store.verify(args.id)
    if problems:
        print(
            f"{args.id}: {len(problems)} of {len(manifest.files)} files differ from the manifest:"
        )
        for problem in problems:
            print(f"  {problem}")
        return 1
    print(f"{args.id}: all {len(manifest.files)} files match the manifest")
    return 0


def _artifacts_gc(args: argparse.Namespace) -> int:
    store = store_of(args)
    leftovers = store.leftovers(dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for leftover in leftovers:
        print(f"{verb} {leftover.path} ({leftover.bytes / 1e6:.1f} MB)")
    total = sum(leftover.bytes for leftover in leftovers) / 1e6
    print(
        f"{verb} {len(leftovers)} folder(s) left by runs no longer alive ({total:.1f} MB); "
        "folders of live runs are kept"
    )
    return 0


def _lineage(args: argparse.Namespace) -> int:
    tree = lineage(store_of(args), args.id)
    print(json.dumps(tree) if args.json else render(tree))
    return 0
