"""One measurement in a fresh interpreter, so that its time and peak memory owe nothing to what
the benchmark's own process has loaded.

    run_child("shard", "stage_run", [store, corpus_id, ...])  # in the benchmark
    python bench/child.py shard stage_run '[...]'             # what that runs

The child imports `bench/<module>.py` (bench is a folder of scripts, not a package), calls the
function with the JSON arguments and prints its JSON result as the last line of its output. A
child's ru_maxrss starts at its parent's peak, so benchmarks keep their module level light and
import heavy libraries inside the functions that run here.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


def run_child(
    module: str, function: str, args: list[Any], env: dict[str, str] | None = None
) -> Any:
    """`module.function(*args)` in a new interpreter; its result, or exit naming the failure."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "child.py"), module, function, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env if env is not None else dict(os.environ),
    )
    if done.returncode:
        sys.exit(f"bench/{module}.py {function} failed in its child:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    module, function, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    result = getattr(importlib.import_module(module), function)(*args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
