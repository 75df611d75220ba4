"""`prefect deploy --all --prefect-file infra/prefect.yaml`, as the infra guide runs it, against a
real Prefect server: every deployment in the file is registered, as the file describes it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client

pytestmark = pytest.mark.slow  # prefect deploy against a real server

REPO = Path(__file__).resolve().parents[2]
PREFECT_YAML = REPO / "infra" / "prefect.yaml"
POOL_TYPES = {"bertflow-process": "process", "bertflow-kubernetes": "kubernetes"}


def prefect(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_deploy_all_registers_every_deployment_in_the_prefect_file(prefect_server):
    env = {
        **os.environ,
        "BERTFLOW_IMAGE": "registry.example.com/bertflow:test",
        "BERTFLOW_STORE": "s3://team-bucket/bertflow",
    }
    for pool, kind in POOL_TYPES.items():  # the guide's first step: the pools exist
        made = prefect("work-pool", "create", pool, "--type", kind, "--overwrite", env=env)
        assert made.returncode == 0, made.stdout + made.stderr
    before = PREFECT_YAML.read_text()
    deployed = prefect("deploy", "--all", "--prefect-file", str(PREFECT_YAML), env=env)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    assert PREFECT_YAML.read_text() == before  # deploy left the file as it was

    declared = yaml.safe_load(PREFECT_YAML.read_text())["deployments"]
    with get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows()}
        registered = {d.name: d for d in client.read_deployments()}
    for spec in declared:
        assert spec["name"] in registered, f"{spec['name']} was not registered"
        deployment = registered[spec["name"]]
        assert deployment.entrypoint == spec["entrypoint"]
        assert flows[deployment.flow_id] in {
            "pretraining-pipeline",
            "ingest",
            "tokenizer",
            "shard",
            "pretrain",
            "evaluate",
        }
        assert deployment.work_pool_name == spec["work_pool"]["name"]
        assert [s.active for s in deployment.schedules] == [
            s["active"] for s in spec.get("schedules", [])
        ]  # the weekly schedule is registered, inactive
        limit = deployment.global_concurrency_limit
        assert (limit.limit if limit else None) == spec.get("concurrency_limit")
    kubernetes = registered["pipeline-kubernetes"]
    assert kubernetes.job_variables["image"] == "registry.example.com/bertflow:test"
    assert kubernetes.job_variables["env"]["BERTFLOW_STORE"] == "s3://team-bucket/bertflow"
