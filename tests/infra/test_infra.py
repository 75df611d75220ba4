"""The deployment files under infra/ parse, agree with each other, and point at code that exists.

Nothing here needs Docker, Kubernetes or SLURM: the files are read as data, entrypoints are
checked with `ast` (no imports of the flows), and the shell scripts are only syntax-checked and
run far enough to print their usage.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
COMPOSE_FILES = [INFRA / "compose.yaml", INFRA / "compose.gpu.yaml"]
PREFECT_YAML = INFRA / "prefect.yaml"
JOB_TEMPLATE = INFRA / "kubernetes" / "base-job-template.json"
SBATCH = INFRA / "slurm" / "pretrain.sbatch"
TORCHRUN = INFRA / "torchrun" / "pretrain-multinode.sh"
PIPELINE_ENTRYPOINT = "flows/pipeline.py"
SOURCE_DIR = "/opt/bertflow"  # the image's WORKDIR, where deployments run
POOLS = {"bertflow-process", "bertflow-kubernetes"}

# `$$` (a literal dollar), `${NAME...}` and `$NAME`, as compose interpolates them
COMPOSE_VARIABLE = re.compile(r"\$(?:\$|\{(?P<braced>[A-Za-z_]\w*)[^}]*\}|(?P<bare>[A-Za-z_]\w*))")
PLACEHOLDER = re.compile(r"{{\s*([\w.\-\[\]$]+)\s*}}")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def strings(node: Any) -> Iterator[str]:
    """Every string (keys too) in a parsed YAML/JSON document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def compose_variables(document: Any) -> set[str]:
    found = set()
    for text in strings(document):
        for match in COMPOSE_VARIABLE.finditer(text):
            if name := match["braced"] or match["bare"]:
                found.add(name)
    return found


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (INFRA / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"not KEY=value: {line!r}"
            pairs[key] = value
    return pairs


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return env


def compose() -> dict[str, Any]:
    return load_yaml(INFRA / "compose.yaml")


def deployments() -> list[dict[str, Any]]:
    return load_yaml(PREFECT_YAML)["deployments"]


def job_template() -> dict[str, Any]:
    return json.loads(JOB_TEMPLATE.read_text())


# -- compose --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(INFRA.rglob("*.yaml")), ids=lambda p: p.name)
def test_yaml_files_parse(path: Path) -> None:
    assert isinstance(load_yaml(path), dict)


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_uses_only_variables_from_env_example(path: Path) -> None:
    undeclared = compose_variables(load_yaml(path)) - set(env_example())
    assert not undeclared, f"{path.name} interpolates {sorted(undeclared)}, not in .env.example"


def test_env_example_declares_nothing_compose_ignores() -> None:
    used = set().union(*(compose_variables(load_yaml(p)) for p in COMPOSE_FILES))
    assert set(env_example()) <= used, sorted(set(env_example()) - used)


def test_compose_has_the_services_and_keeps_credentials_out() -> None:
    services = compose()["services"]
    assert {"postgres", "prefect-server", "minio", "minio-setup", "worker"} <= set(services)
    secrets = ("PASSWORD", "SECRET", "ACCESS_KEY")
    for name, service in services.items():
        for key, value in environment(service).items():
            if any(word in key for word in secrets):
                assert "${" in str(value), f"{name}.{key} is written in compose.yaml"


def test_worker_talks_to_the_services_of_this_file() -> None:
    services = compose()["services"]
    worker = services["worker"]
    env = environment(worker)
    api = urlparse(env["PREFECT_API_URL"])
    assert api.hostname == "prefect-server" and api.path == "/api"
    assert f"{api.port}" == services["prefect-server"]["ports"][0].rsplit(":", 1)[1]
    assert "/api/health" in " ".join(services["prefect-server"]["healthcheck"]["test"])
    assert worker["depends_on"]["prefect-server"]["condition"] == "service_healthy"
    assert worker["depends_on"]["minio-setup"]["condition"] == "service_completed_successfully"
    assert urlparse(env["AWS_ENDPOINT_URL"]).hostname == "minio"
    assert env["BERTFLOW_STORE"].startswith("s3://")
    database = environment(services["prefect-server"])["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert database.startswith("postgresql+asyncpg://") and "@postgres:5432/" in database
    build = worker["build"]
    assert ((INFRA / build["context"]).resolve() / build["dockerfile"]) == INFRA / "Dockerfile"


def test_worker_polls_the_pool_the_process_deployments_use() -> None:
    command = compose()["services"]["worker"]["command"].split()
    pool = command[command.index("--pool") + 1]
    assert command[command.index("--type") + 1] == "process"
    process = [d for d in deployments() if d["work_pool"]["name"] != "bertflow-kubernetes"]
    assert process and {d["work_pool"]["name"] for d in process} == {pool}


# -- prefect.yaml ---------------------------------------------------------------------------------


def test_prefect_yaml_is_what_prefect_deploy_reads() -> None:
    from prefect.cli.deploy._models import PrefectYamlModel  # the model `prefect deploy` validates

    raw = load_yaml(PREFECT_YAML)
    model = PrefectYamlModel.model_validate(raw)
    assert model.name == "bertflow" and model.prefect_version == "3.8.8"
    assert not raw.get("build") and not raw.get("push")
    assert raw["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": SOURCE_DIR}}
    ]
    names = [d.name for d in model.deployments]
    assert len(names) == len(set(names)), names
    assert {d.work_pool.name for d in model.deployments} <= POOLS


def flow_functions(path: Path) -> dict[str, bool]:
    """Top-level functions of a module, each with whether a `flow` decorator wraps it."""

    def is_flow(decorator: ast.expr) -> bool:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        return (isinstance(target, ast.Name) and target.id == "flow") or (
            isinstance(target, ast.Attribute) and target.attr == "flow"
        )

    tree = ast.parse(path.read_text(), filename=str(path))
    return {
        node.name: any(is_flow(d) for d in node.decorator_list)
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


@pytest.mark.parametrize("deployment", deployments(), ids=lambda d: d["name"])
def test_entrypoint_names_a_flow_in_the_repository(deployment: dict[str, Any]) -> None:
    path, _, function = deployment["entrypoint"].partition(":")
    source = REPO / path
    if path == PIPELINE_ENTRYPOINT and not source.exists():
        pytest.skip(f"{path} is not written yet")
    assert source.is_file(), f"{deployment['name']}: no file {path}"
    functions = flow_functions(source)
    assert function in functions, f"{deployment['name']}: {path} defines no {function}()"
    assert functions[function], f"{deployment['name']}: {function} is not a @flow"


def test_pipeline_deployments_have_an_inactive_schedule_and_run_one_at_a_time() -> None:
    pipelines = [d for d in deployments() if d["entrypoint"].startswith(PIPELINE_ENTRYPOINT)]
    assert {d["work_pool"]["name"] for d in pipelines} == POOLS
    for deployment in pipelines:
        assert deployment["concurrency_limit"] == 1, deployment["name"]
        assert deployment["schedules"], deployment["name"]
        for schedule in deployment["schedules"]:
            assert schedule["active"] is False, deployment["name"]
            assert len(schedule["cron"].split()) == 5, schedule


def test_kubernetes_deployment_sets_only_declared_pool_variables() -> None:
    (kubernetes,) = [d for d in deployments() if d["work_pool"]["name"] == "bertflow-kubernetes"]
    declared = job_template()["variables"]["properties"]
    job_variables = kubernetes["work_pool"]["job_variables"]
    assert set(job_variables) <= set(declared)
    assert "image" in job_variables and "BERTFLOW_STORE" in job_variables["env"]


# -- Kubernetes -----------------------------------------------------------------------------------


def test_job_template_placeholders_are_declared_variables() -> None:
    template = job_template()
    properties = template["variables"]["properties"]
    assert {"gpus", "image", "namespace", "runs_pvc", "cpu_request", "memory_request"} <= set(
        properties
    )
    used = {m for text in strings(template["job_configuration"]) for m in PLACEHOLDER.findall(text)}
    assert used and used <= set(properties), sorted(used - set(properties))

    from prefect.server.schemas.actions import validate_base_job_template  # the server's check

    validate_base_job_template(template)


def rendered_manifest(values: dict[str, Any]) -> dict[str, Any]:
    """The job manifest with the variables' defaults, overridden by `values` (as a worker does)."""
    from prefect.utilities.templating import apply_values

    template = job_template()
    properties = template["variables"]["properties"]
    defaults = {k: v["default"] for k, v in properties.items() if v.get("default") is not None}
    return apply_values(template["job_configuration"], defaults | values)["job_manifest"]


def test_job_template_renders_a_gpu_pod_with_runs_volume_shm_and_s3_secret() -> None:
    manifest = rendered_manifest({"image": "registry.example/bertflow:1"})
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "prefect-job"  # the Kubernetes worker requires this name
    assert container["image"] == "registry.example/bertflow:1"
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 1}  # unset limits vanish
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    runs = volumes[mounts["/data/runs"]]["persistentVolumeClaim"]["claimName"]
    assert runs == load_yaml(INFRA / "kubernetes" / "runs-pvc.yaml")["metadata"]["name"]
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    secret = load_yaml(INFRA / "kubernetes" / "s3-secret.example.yaml")
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret["stringData"])
    four = rendered_manifest({"gpus": 4})["spec"]["template"]["spec"]["containers"][0]
    assert four["resources"]["limits"]["nvidia.com/gpu"] == 4


# -- launch scripts -------------------------------------------------------------------------------


def trainer_options() -> set[str]:
    """Every option of `python -m bertflow.model.training`: TrainConfig's fields as --kebab-case,
    plus the ones main() adds itself (read with ast: importing the module would load torch)."""
    options = set()
    for source in ("training/train.py", "training/config.py"):
        options |= _options_in(ast.parse((REPO / "model" / source).read_text()))
    return options


def _options_in(tree: ast.Module) -> set[str]:
    options = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "TrainConfig":
            fields = [i.target for i in node.body if isinstance(i, ast.AnnAssign)]
            options.update("--" + f.id.replace("_", "-") for f in fields if isinstance(f, ast.Name))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            options.update(a.value for a in node.args if isinstance(a, ast.Constant))
    return options


@pytest.mark.parametrize("script", [SBATCH, TORCHRUN], ids=lambda p: p.name)
def test_launch_script_is_valid_bash_passing_real_trainer_options(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=10)
    text = script.read_text()
    command = text[text.rindex("-m bertflow.model.training") :]
    passed = set(re.findall(r"^\s*(--[a-z][a-z0-9-]*)", command, flags=re.MULTILINE))
    assert {"--shards", "--devices", "--num-nodes", "--strategy", "--resume"} <= passed
    unknown = passed - trainer_options()
    assert not unknown, f"{script.name} passes {sorted(unknown)}, which the trainer lacks"


def test_sbatch_script_asks_for_one_task_per_gpu_and_requeues() -> None:
    directives = dict(
        line.removeprefix("#SBATCH ").split("=", 1) if "=" in line else (line, "")
        for line in SBATCH.read_text().splitlines()
        if line.startswith("#SBATCH ")
    )
    assert directives["--ntasks-per-node"] == directives["--gpus-per-node"]
    assert "--requeue" in {k.removeprefix("#SBATCH ") for k in directives}
    assert '--devices "$SLURM_NTASKS_PER_NODE"' in SBATCH.read_text()


@pytest.mark.parametrize("script", [SBATCH, TORCHRUN], ids=lambda p: p.name)
def test_launch_script_without_its_settings_fails_naming_them(script: Path) -> None:
    result = subprocess.run(
        ["bash", str(script)],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode != 0
    for name in ("SHARDS_ID", "BERTFLOW_STORE", "RUN_DIR"):
        assert name in result.stderr
    if script == TORCHRUN:
        assert result.stderr.startswith("usage:")


# -- image ----------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[str]:
    """The Dockerfile's instructions, one string each (comments dropped, continuations joined)."""
    text = (INFRA / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return [" ".join(i.split()) for i in "\n".join(lines).replace("\\\n", " ").splitlines() if i]


def test_dockerfile_installs_torch_from_its_index_before_the_lock_then_the_project() -> None:
    steps = dockerfile_instructions()

    def index(pattern: str) -> int:
        (found,) = [i for i, step in enumerate(steps) if re.search(pattern, step)]
        return found

    torch = index(r"^RUN pip install .*torch==")
    assert "${TORCH_INDEX_URL}" in steps[torch] and "--index-url" in steps[torch]
    assert index(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu$") < torch
    assert index(r"^ARG TORCH_VERSION=") < torch
    lock = index(r"^RUN pip install -r \S*requirements\.lock")
    assert torch < lock < index(r"^RUN pip install --no-deps \.")
    assert index(r"^FROM python:3\.11-slim$") == 0
    assert f"WORKDIR {SOURCE_DIR}" in steps
    user = [s for s in steps if s.startswith("USER ")]
    assert user and user[-1] not in ("USER root", "USER 0")
    env = " ".join(s for s in steps if s.startswith("ENV "))
    for setting in (
        "BERTFLOW_STORE=/data/store",
        "BERTFLOW_RUNS=/data/runs",
        "PREFECT_SERVER_ANALYTICS_ENABLED=false",
    ):
        assert setting in env


def test_build_context_leaves_out_environments_history_and_credentials() -> None:
    ignored = {
        line.strip()
        for line in (INFRA / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", "infra/.env"} <= ignored
