"""`bertflow`: one console script, one subcommand per stage plus artifact and lineage tools.

Stage subcommands run their stage as a Prefect flow: against PREFECT_API_URL when it is set (so the
run shows in the UI), otherwise on a temporary local Prefect server, given longer than Prefect's
20 s to start (a loaded laptop misses that) and named in a clear error when it still does not.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from bertflow.flows.serve_options import ServeOptions
from bertflow.flows.store_commands import add_json, add_store_commands, store_of
from bertflow.model.evaluation.config import EvaluateConfig
from bertflow.model.evaluation.task_spec import TaskSpec
from bertflow.model.training.config import TrainConfig
from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.lineage import lineage, render, summarize
from bertflow.pipeline.core.options import (
    add_config_options,
    config_from_args,
    describe_validation_error,
)
from bertflow.pipeline.core.store import DEFAULT_STORE, STORE_ENV, ArtifactStore, StoreError
from bertflow.pipeline.ingest.config import IngestConfig
from bertflow.pipeline.shards.config import ShardConfig
from bertflow.pipeline.tokenizer.config import TokenizerConfig

# Building the parser and the commands that run no flow (help, artifacts, lineage, evaluate show
# and compare) import only configs and readers: torch, Lightning and Prefect load when a stage
# runs (tests/flows/test_cli_imports.py holds this).

# Prefect 3's setting for how long a flow run waits for the temporary server; its default is 20 s.
STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
STARTUP_TIMEOUT_S = 120
# What prefect.server.api.server.SubprocessASGIServer raises (a RuntimeError) when that runs out.
UNREACHABLE = "Failed to reach API at"  # Prefect's RuntimeError when its server does not answer
STARTUP_TIMED_OUT = "Timed out while attempting to connect to ephemeral Prefect API server"
KEEP_A_SERVER = "export PREFECT_API_URL=http://127.0.0.1:4200/api; prefect server start"


class PrefectServerError(Exception):
    """No Prefect server to run a flow on."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ValidationError as e:
        print(
            f"bertflow {args.command}: invalid option\n{describe_validation_error(e)}",
            file=sys.stderr,
        )
        return 2
    except (InputError, StoreError, PrefectServerError) as e:
        print(f"bertflow {args.command}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a full disk, a permission, a device gone: the system's words
        stage = args.command in STAGE_COMMANDS
        print(f"bertflow {args.command}: error: {describe_os_error(e, stage)}", file=sys.stderr)
        return 1


STAGE_COMMANDS = ("ingest", "tokenizer", "shard", "pretrain", "evaluate", "run")


def describe_os_error(e: OSError, stage: bool) -> str:
    """What failed and on which file; for a stage, that it published nothing (its staging folder
    is discarded); for a full disk, what to do."""
    where = f": {e.filename}" if e.filename else ""
    what = (e.strerror or str(e)) + where
    if stage:
        what += "; nothing was published"
    if e.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(e):
        what += "; free space (or point TMPDIR and --store elsewhere) and rerun"
    return what


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store",
        default=argparse.SUPPRESS,
        help=f"artifact store: a folder or fsspec URL such as s3://bucket/prefix "
        f"(default: ${STORE_ENV}, else {DEFAULT_STORE})",
    )
    parser = argparse.ArgumentParser(
        prog="bertflow",
        parents=[common],
        description="Pretrain BERT encoders as a content-addressed Prefect pipeline.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ingest = _stage_parser(
        commands,
        common,
        "ingest",
        IngestConfig,
        _ingest,
        help="raw text -> corpus artifact",
        description="Clean, sentence-split and deduplicate raw text into a corpus artifact.",
        skip=("sources",),
    )
    ingest.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="files, folders, globs, fsspec URLs (s3://...), or 'demo'/'demo-small'",
    )

    tokenizer = _stage_parser(
        commands,
        common,
        "tokenizer",
        TokenizerConfig,
        _tokenizer,
        help="corpus -> WordPiece tokenizer artifact",
        description="Train a BERT WordPiece vocabulary on a corpus (or import a vocab.txt).",
    )
    tokenizer.add_argument(
        "--corpus", required=True, metavar="CORPUS_ID", help="corpus artifact id"
    )

    shard = _stage_parser(
        commands,
        common,
        "shard",
        ShardConfig,
        _shard,
        help="corpus + tokenizer -> pretraining shards",
        description="Make BERT pretraining examples in balanced Parquet shards.",
    )
    shard.add_argument("--corpus", required=True, metavar="CORPUS_ID", help="corpus artifact id")
    shard.add_argument(
        "--tokenizer", required=True, metavar="TOKENIZER_ID", help="tokenizer artifact id"
    )
    shard.add_argument(
        "--dask-address",
        metavar="ADDRESS",
        help="run the work on this Dask scheduler (tcp://host:8786)",
    )
    shard.add_argument(
        "--spill-dir", metavar="DIR", help="intermediate files; must be shared by all Dask workers"
    )

    pretrain = _stage_parser(
        commands,
        common,
        "pretrain",
        TrainConfig,
        _pretrain,
        help="shards -> pretrained BERT model artifact",
        description="Pretrain BERT (MLM + NSP) on a shards artifact with PyTorch Lightning; the "
        "training runs in a subprocess (see python -m bertflow.model.training for torchrun/SLURM).",
    )
    pretrain.add_argument("--shards", required=True, metavar="SHARDS_ID", help="shards artifact")
    pretrain.add_argument(
        "--resume", action="store_true", help="continue from the run folder's last checkpoint"
    )
    pretrain.add_argument(
        "--run-dir", metavar="DIR", help="checkpoints and logs (default: ~/.bertflow/runs/<id>)"
    )

    evaluate = _stage_parser(
        commands,
        common,
        "evaluate",
        EvaluateConfig,
        _evaluate,
        help="model -> evaluation artifact (intrinsic + fine-tuned tasks)",
        description="Evaluate a model: MLM/NSP metrics on its validation shards and fine-tuned "
        "downstream tasks beside baselines. `evaluate show ID` prints an evaluation's report, "
        "`evaluate compare ID ID ...` evaluations side by side.",
        skip=("tasks",),
    )
    evaluate.add_argument("--model", metavar="MODEL_ID", help="model artifact to evaluate")
    evaluate.add_argument(
        "--task",
        action="append",
        default=[],
        metavar="SPEC",
        dest="task_specs",
        help="a labelled task: PATH (a GLUE folder such as SST-2/, or a .csv/.tsv/.jsonl/"
        ".parquet file or folder of train/test files), or key=value pairs such as "
        "path=reviews.csv,text_field=body,label_field=stars,name=reviews,seeds=5 (seeds: this "
        "task's fine-tuning runs); repeat for more",
    )
    readers = evaluate.add_subparsers(
        dest="reading", metavar="{show,compare}", help="read evaluations instead of evaluating"
    )
    show_evaluation = readers.add_parser(
        "show",
        parents=[common],
        help="an evaluation's report (lineage, metrics beside baselines)",
        description="Print an evaluation's report and its headline numbers beside the previous "
        "evaluation of the same tasks.",
    )
    show_evaluation.add_argument("evaluation", metavar="EVALUATION_ID")
    show_evaluation.set_defaults(handler=_evaluate_show)
    compare = readers.add_parser(
        "compare",
        parents=[common],
        help="evaluations side by side",
        description="Print evaluations side by side: their intrinsic metrics and each task's "
        "scores beside the baselines.",
    )
    compare.add_argument("evaluations", nargs="+", metavar="EVALUATION_ID")
    add_json(compare)
    compare.set_defaults(handler=_evaluate_compare)

    run = commands.add_parser(
        "run",
        parents=[common],
        help="the whole pipeline: ingest -> ... -> evaluate",
        description="Run the pretraining pipeline as one Prefect flow, every stage cached by "
        "its artifact id, then print the evaluation's lineage.",
    )
    _add_pipeline_config(run)
    run.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config as YAML (to edit and pass to --config)",
    )
    add_json(run)
    run.set_defaults(handler=_run)

    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="serve the pipeline and stage deployments",
        description="Serve deployments of the pipeline and of each stage flow against the "
        "Prefect server at PREFECT_API_URL: run them from the UI, on a schedule, or on events.",
    )
    _add_pipeline_config(serve)
    add_config_options(serve, ServeOptions)
    serve.set_defaults(handler=_serve)

    add_store_commands(commands, common)
    return parser


def _stage_parser(
    commands: Any,
    common: argparse.ArgumentParser,
    name: str,
    config: type[BaseModel],
    handler: Callable[[argparse.Namespace], int],
    help: str,
    description: str,
    skip: tuple[str, ...] = (),
) -> argparse.ArgumentParser:
    """A stage subcommand: its config's fields as options, --json, and its handler."""
    parser = commands.add_parser(name, parents=[common], help=help, description=description)
    add_config_options(parser, config, skip=skip)
    add_json(parser)
    parser.set_defaults(handler=handler)
    return parser


def _run_stage(
    args: argparse.Namespace,
    run: Callable[[ArtifactStore], Any],
    show: Callable[[ArtifactStore, Any], None] | None = None,
) -> int:
    """Run a stage; print its result (one JSON line with --json), then `show` anything more."""
    store = store_of(args)
    result = _on_prefect_server(args.command, lambda: run(store))
    if args.json:
        sys.stdout.flush()
        print(json.dumps(result.model_dump(mode="json")), flush=True)
        return 0
    manifest = store.require(result.id)
    state = "already existed (cached)" if result.cached else "published"
    print(f"{result.id} {state}\n  {summarize(manifest)}\n  {result.uri}")
    for warning in result.stats.get("warnings", []):
        print(f"  warning: {warning}")
    print(f"  next: bertflow lineage {result.id}")
    if show is not None:
        show(store, result)
    return 0


def _on_prefect_server(command: str, run_flow: Callable[[], Any]) -> Any:
    """Run a flow. Without PREFECT_API_URL, Prefect starts a temporary server first: say so (and
    how to keep one instead), give it STARTUP_TIMEOUT_S unless the user chose a limit, and turn
    its time-out into a PrefectServerError. The limit is read once, when Prefect is imported,
    which is why the command's flow module is imported only after this has set it."""
    if os.environ.get("PREFECT_API_URL"):
        return _on_server(run_flow, os.environ["PREFECT_API_URL"])
    os.environ.setdefault(STARTUP_TIMEOUT_ENV, str(STARTUP_TIMEOUT_S))
    limit = os.environ[STARTUP_TIMEOUT_ENV]
    if not limit.strip().isdigit():  # else Prefect's settings refuse it, naming no variable
        raise PrefectServerError(f"{STARTUP_TIMEOUT_ENV}={limit!r}: give whole seconds, e.g. 300")
    print(
        f"bertflow {command}: starting a temporary Prefect server for this run (no "
        f"PREFECT_API_URL; waiting up to {limit} s); to keep one running instead: "
        f"`{KEEP_A_SERVER}` in another shell, and the same export in this one",
        file=sys.stderr,
        flush=True,
    )
    try:
        return run_flow()
    except RuntimeError as e:
        if STARTUP_TIMED_OUT not in str(e):
            raise
        raise PrefectServerError(
            f"the temporary Prefect server did not start within {limit} s; raise "
            f"{STARTUP_TIMEOUT_ENV} (e.g. to 300), or keep a server running "
            f"(`{KEEP_A_SERVER}`) and set PREFECT_API_URL here"
        ) from None


def _on_server(run_flow: Callable[[], Any], api_url: str) -> Any:
    """Run a flow on the server at `api_url`; the server lost (down, restarting) during the run
    becomes a PrefectServerError saying so, not a traceback."""
    from bertflow.flows.serving import connection_lost

    try:
        return run_flow()
    except Exception as e:
        why = connection_lost(e)
        if why is None and not (isinstance(e, RuntimeError) and UNREACHABLE in str(e)):
            raise
        raise PrefectServerError(
            f"the Prefect server at {api_url} did not answer during the run ({why or e}); what "
            f"the run had published is kept, the rest is not: run the command again once the "
            f"server is up (finished stages are then cached)"
        ) from None


def _ingest(args: argparse.Namespace) -> int:
    config = config_from_args(IngestConfig, args, sources=args.sources)

    def run(store: ArtifactStore) -> Any:
        from bertflow.flows.ingest import ingest_flow  # imports prefect: only when a flow runs

        return ingest_flow(config=config, store_url=store.url)

    return _run_stage(args, run)


def _tokenizer(args: argparse.Namespace) -> int:
    config = config_from_args(TokenizerConfig, args)

    def run(store: ArtifactStore) -> Any:
        from bertflow.flows.tokenizer import tokenizer_flow

        return tokenizer_flow(corpus_id=args.corpus, config=config, store_url=store.url)

    return _run_stage(args, run)


def _shard(args: argparse.Namespace) -> int:
    config = config_from_args(ShardConfig, args)

    def run(store: ArtifactStore) -> Any:
        from bertflow.flows.shards import run_shard_flow

        return run_shard_flow(
            dask_address=args.dask_address,
            corpus_id=args.corpus,
            tokenizer_id=args.tokenizer,
            config=config,
            store_url=store.url,
            spill_dir=args.spill_dir,
        )

    return _run_stage(args, run)


def _pretrain(args: argparse.Namespace) -> int:
    config = config_from_args(TrainConfig, args)

    def run(store: ArtifactStore) -> Any:
        from bertflow.flows.pretrain import pretrain_flow

        return pretrain_flow(
            shards_id=args.shards,
            config=config,
            store_url=store.url,
            resume=args.resume,
            run_dir=args.run_dir,
        )

    return _run_stage(args, run)


def _evaluate_show(args: argparse.Namespace) -> int:
    store = store_of(args)
    manifest = store.require(args.evaluation, kind="evaluation")
    with store.open(manifest.id, manifest.layout["report"]) as f:
        print(f.read().decode("utf-8"))
    _print_beside_previous(store, manifest)
    return 0


def _evaluate_compare(args: argparse.Namespace) -> int:
    from bertflow.model.evaluation.report import comparison_table, render_text_table

    store = store_of(args)
    manifests = [store.require(i, kind="evaluation") for i in args.evaluations]
    header, rows = comparison_table(manifests)
    if args.json:
        print(json.dumps({"header": header, "rows": rows}))
    else:
        print(render_text_table(header, rows))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if not args.model:
        print(
            "bertflow evaluate: give --model MODEL_ID (or `evaluate show ID`, "
            "`evaluate compare ID ...`)",
            file=sys.stderr,
        )
        return 2
    tasks = [TaskSpec.parse(spec) for spec in args.task_specs]
    config = config_from_args(EvaluateConfig, args, tasks=tasks)

    def run(store: ArtifactStore) -> Any:
        from bertflow.flows.evaluate import evaluate_flow

        return evaluate_flow(model_id=args.model, config=config, store_url=store.url)

    def show(store: ArtifactStore, result: Any) -> None:
        _print_evaluation(store, store.require(result.id))
        print(f"  report: bertflow evaluate show {result.id}")

    return _run_stage(args, run, show)


def _print_evaluation(store: ArtifactStore, manifest: Any) -> None:
    """The downstream table beside the baselines, then the headline numbers beside the previous
    evaluation of the same tasks."""
    from bertflow.model.evaluation.report import downstream_table, render_text_table

    if manifest.stats["tasks"]:
        header, rows = downstream_table(manifest.stats["tasks"], manifest.config)
        print("\n" + render_text_table(header, rows, text_columns=3))
    _print_beside_previous(store, manifest)


def _print_beside_previous(store: ArtifactStore, manifest: Any) -> None:
    from bertflow.model.evaluation.report import (
        comparison_table,
        previous_evaluation,
        render_text_table,
    )

    previous = previous_evaluation(store, manifest)
    header, rows = comparison_table([m for m in (previous, manifest) if m is not None])
    print("\n" + render_text_table(header, rows))
    if previous is not None:
        print(
            f"(left: the previous evaluation of these tasks; compare more with "
            f"bertflow evaluate compare {previous.id} {manifest.id} ...)"
        )


def _add_pipeline_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="YAML",
        help="pipeline config; sections it leaves out keep the preset's",
    )
    parser.add_argument(
        "--preset",
        choices=["demo", "bert-base"],
        default="demo",
        help="the config to start from (default: demo)",
    )


def _pipeline_config(args: argparse.Namespace) -> Any:
    from bertflow.flows.pipeline_config import load_config, preset

    config = preset(args.preset)
    if args.config:
        config = load_config(args.config, base=config)
    if getattr(args, "store", None):
        config = config.model_copy(update={"store": args.store})
    return config


def _run(args: argparse.Namespace) -> int:
    config = _pipeline_config(args)
    if args.print_config:
        from bertflow.flows.pipeline_config import to_yaml

        print(to_yaml(config), end="")
        return 0
    from bertflow.flows.pipeline import pretraining_pipeline

    result = _on_prefect_server(args.command, lambda: pretraining_pipeline(config=config))
    store = ArtifactStore(config.store)
    if args.json:
        sys.stdout.flush()
        stages = {name: s.model_dump(mode="json") for name, s in result.stages.items()}
        print(json.dumps({"evaluation": result.evaluation.id, "stages": stages}), flush=True)
        return 0
    print()
    for name, stage in result.stages.items():
        print(f"{name:<11} {stage.id}  {'cached' if stage.cached else 'made'}")
    evaluation = result.evaluation.id
    print(f"\n{render(lineage(store, evaluation))}")
    _print_evaluation(store, store.require(evaluation))
    print(f"\nnext: bertflow evaluate show {evaluation}   (metrics beside baselines)")
    print(
        f"      bertflow export {result.stages[_last_model(result)].id} --out DIR   "
        "(the model for transformers)"
    )
    print(f"      artifacts: {store.url}")
    if os.environ.get("PREFECT_API_URL"):  # a temporary server is gone by now
        from bertflow.flows.records import artifact_page

        print(f"      Prefect UI: {artifact_page(evaluation)}   (the report; links down)")
    return 0


def _last_model(result: Any) -> str:
    return [name for name in result.stages if name.startswith("pretrain-")][-1]


def serve_options(args: argparse.Namespace) -> ServeOptions:
    return config_from_args(ServeOptions, args)


def _serve(args: argparse.Namespace) -> int:
    if not os.environ.get("PREFECT_API_URL"):
        print(
            "bertflow serve: no Prefect server to serve to. Start one and point at it:\n"
            "  prefect server start            # UI and API on http://127.0.0.1:4200\n"
            "  export PREFECT_API_URL=http://127.0.0.1:4200/api",
            file=sys.stderr,
        )
        return 2
    options = serve_options(args)  # a bad value is refused naming its option, before Prefect loads
    from bertflow.flows.deployments import AUTOMATION, deployments
    from bertflow.flows.records import ui_base
    from bertflow.flows.serving import serve

    served = deployments(_pipeline_config(args), options)
    api = os.environ["PREFECT_API_URL"]
    state = "active" if options.schedule_active else "inactive: turn it on in the UI"
    print(
        f"serving to {api}:\n"
        f"  {served[0].flow_name}/{served[0].name}: cron '{options.cron}' ({options.timezone}),"
        f" {state}; at most {options.concurrency} run(s) at a time; automation "
        f"'{AUTOMATION}' {'on' if options.automation else 'off'}\n"
        f"  stages: {', '.join(f'{d.flow_name}/{d.name}' for d in served[1:])}\n"
        f"run them from {ui_base()}/deployments (Run -> Custom run shows the "
        f"form); Ctrl-C stops serving",
        flush=True,
    )
    return serve(served, api)


if __name__ == "__main__":
    sys.exit(main())
