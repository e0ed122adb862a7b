"""No secret anywhere (issue 15), on the real `hubploy up` stack: distinctive values are planted in a hub's
sops-encrypted secrets and in the secret field of every credential block (GCP, AWS, Azure, kubeconfig, the
sandbox registry's DockerRegistryCredentials, the webhook Secret); a lifecycle takes that hub to prod
(approved), and a prod deploy of three hubs whose cloud blocks reach stand-in cloud CLIs fails (the CLIs
print every credential they are given into their error output). Then every place Prefect and the stack
keep anything is searched, for each value as it is and base64-encoded: every table of the server's
SQLite file (logs, artifacts, flow-run parameters and states, paused-run inputs, task runs, events...),
the raw database files, the API server's log, the worker's output (which holds the flow-run processes'),
the webhook receiver's log, and the stored task results (exceptions included). Zero hits.

The kubeconfig block holds the sandbox's real token and the registry block the real registry password,
so that the lifecycle can use them: those values are the markers for those two blocks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import yaml
from helpers.cli import VENV_BIN
from helpers.example_repo import copy_example_repo
from helpers.gitrepo import Repo, init_repo
from helpers.stack import UpStack

pytestmark = [pytest.mark.reliability, pytest.mark.sandbox, pytest.mark.prefect]

LIFECYCLE = "hubploy-lifecycle/lifecycle"
PROD_DEPLOY = "hubploy-prod-deploy/prod-deploy"
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")
# A cloud CLI stand-in that gives away every credential it is handed: the files named on its command line
# (key files, @password files) and the AWS credentials file, in its error message, then fails.
LEAKY_CLI = """#!/bin/sh
leak=""
for arg in "$@"; do
  file="${arg#*=}"; file="${file#@}"
  [ -f "$file" ] && leak="$leak $(tr '\\n' ' ' < "$file")"
done
[ -n "$AWS_SHARED_CREDENTIALS_FILE" ] && leak="$leak $(tr '\\n' ' ' < "$AWS_SHARED_CREDENTIALS_FILE")"
printf "ERROR: %s refused these credentials:%s\\n" "$(basename "$0")" "$leak" >&2
exit 1
"""
CLOUD_HUBS = {  # hub: (its cluster section, naming a block; the CLI it runs first)
    "leakgcp": (
        {
            "provider": "gcloud",
            "gcloud": {
                "project": "p",
                "cluster": "c",
                "zone": "us-central1-a",
                "credentials_block": "leak-gcp",
            },
        },
        "gcloud",
    ),
    "leakaws": (
        {"provider": "aws", "aws": {"cluster": "c", "region": "us-west-2", "credentials_block": "leak-aws"}},
        "aws",
    ),
    "leakazure": (
        {
            "provider": "azure",
            "azure": {"resource_group": "g", "cluster": "c", "credentials_block": "leak-azure"},
        },
        "az",
    ),
}


def encodings(value: str) -> set[str]:
    """``value`` and what is left of it base64-encoded at each byte alignment (the characters that do
    not depend on its neighbours)."""
    found = {value}
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + value.encode()).decode()
        core = encoded[(pad * 8 + 5) // 6 : -4]
        if len(core) >= 12:
            found.add(core)
    return found


def plant(markers: dict[str, str], sandbox, stack: UpStack) -> None:  # type: ignore[no-untyped-def]
    """The credential blocks, saved through the stack's API (their secret fields hold the markers)."""
    from blocks.aws import AwsClusterCredentials
    from blocks.azure import AzureClusterCredentials
    from blocks.gcp import GcpClusterCredentials
    from blocks.kubeconfig import KubeconfigCredentials

    key = f"-----BEGIN PRIVATE KEY-----\n{markers['GCP block private key']}\n-----END PRIVATE KEY-----\n"
    key_file = {"type": "service_account", "client_email": "d@p.iam.example", "private_key": key}
    with stack.prefect_settings():
        GcpClusterCredentials(
            service_account_info=key_file, project="p", cluster="c", location="us-central1-a"
        ).save("leak-gcp", overwrite=True)
        AwsClusterCredentials(
            aws_access_key_id="AKIAEXAMPLE",
            cluster="c",
            region="us-west-2",
            aws_secret_access_key=markers["AWS block secret key"],
        ).save("leak-aws", overwrite=True)
        AzureClusterCredentials(
            client_id="app",
            tenant_id="tenant",
            resource_group="g",
            cluster="c",
            client_secret=markers["Azure block secret"],
        ).save("leak-azure", overwrite=True)
        KubeconfigCredentials.from_kubeconfig(sandbox.env["KUBECONFIG"]).save("leak-kube", overwrite=True)


def make_repo(root: Path, hub: str, markers: dict[str, str], env: dict[str, str]) -> Repo:
    """A deployment repo whose hub ``hub`` reaches the sandbox through the kubeconfig block and has the
    planted values in its sops-encrypted secrets."""
    repo = init_repo(root, branch="staging")
    copy_example_repo(repo.root, {hub: "minimal"}, settings_extra="health_check_timeout: 60\n")
    hub_dir = repo.root / "deployments" / hub
    config = yaml.safe_load((hub_dir / "hubploy.yaml").read_text())
    config["cluster"] = {"provider": "kubeconfig", "kubeconfig": {"credentials_block": "leak-kube"}}
    (hub_dir / "hubploy.yaml").write_text(yaml.safe_dump(config))
    password = markers["hub sops secret (hub config)"]
    secrets_values = {
        "proxy": {"secretToken": markers["hub sops secret (proxy token)"]},
        "hub": {"config": {"DummyAuthenticator": {"password": password}}},
    }
    for env_name in ("staging", "prod"):
        secret_file = Path("deployments") / hub / "secrets" / f"{env_name}.yaml"
        (repo.root / secret_file).write_text(yaml.safe_dump({"jupyterhub": secrets_values}))
        subprocess.run(
            ["sops", "--encrypt", "--in-place", str(secret_file)],
            cwd=repo.root,
            env=env,
            check=True,
            capture_output=True,
        )
    repo.commit(None, f"hub {hub} with planted secrets")
    return repo


def start(
    stack: UpStack, deployment: str, storage: Path, env: dict[str, str] | None = None, **parameters: Any
) -> UUID:
    """A run of ``deployment`` whose task results are stored under ``storage``."""
    from prefect.deployments import run_deployment

    job_env = {"PREFECT_LOCAL_STORAGE_PATH": str(storage), **(env or {})}
    with stack.prefect_settings():
        return run_deployment(deployment, parameters=parameters, timeout=0, job_variables={"env": job_env}).id


def wait(stack: UpStack, run_id: UUID, done: str, timeout: float = 900) -> dict[str, Any]:
    """The run's state once its type is ``done`` (or final)."""
    deadline = time.monotonic() + timeout
    while (state := stack.flow_run(str(run_id))["state"])["type"] not in (done, *FINAL):
        assert time.monotonic() < deadline, state
        time.sleep(2)
    return state


def lifecycle_to_prod(stack: UpStack, repo: Repo, origin: Path, hub: str, storage: Path) -> None:
    from prefect.flow_runs import resume_flow_run

    common = f"deployments/{hub}/config/common.yaml"
    sha = repo.commit({common: (repo.root / common).read_text() + "# to prod\n"}, "to prod")
    repo.git("push", "--quiet", str(origin), "staging")
    run_id = start(stack, LIFECYCLE, storage, sha=sha, repo_url=str(origin))
    assert wait(stack, run_id, "PAUSED")["type"] == "PAUSED"
    with stack.prefect_settings():
        resume_flow_run(
            run_id,
            run_input={"decision": "approve", "sha": sha, "reason": "leak check", "approver": "auditor"},
        )
    state = wait(stack, run_id, "COMPLETED")
    assert state["type"] == "COMPLETED", state


def failing_prod_deploy(stack: UpStack, repo: Repo, origin: Path, storage: Path, path: str) -> None:
    """A push to prod adding three hubs whose cloud blocks reach leaky stand-in CLIs (first on ``path``)."""
    repo.git("fetch", "--quiet", str(origin), "prod")  # the merge the promotion made
    before = repo.git("rev-parse", "FETCH_HEAD")
    repo.git("checkout", "-q", "-b", "cloud", before)
    cloud = repo.commit(
        {
            f"deployments/{hub}/hubploy.yaml": yaml.safe_dump({"cluster": cluster})
            for hub, (cluster, _) in CLOUD_HUBS.items()
        },
        "hubs on three clouds",
    )
    repo.git("push", "--quiet", str(origin), "cloud")
    run_id = start(
        stack, PROD_DEPLOY, storage, {"PATH": path}, sha=cloud, before=before, repo_url=str(origin)
    )
    state = wait(stack, run_id, "FAILED")
    assert (state["type"], state["name"]) == ("FAILED", "ProdFailed"), state
    for hub, (_, cli) in CLOUD_HUBS.items():
        assert f"{hub}: " in state["message"], state
        assert f"{cli} refused these credentials" in state["message"], state


def webhook_deliveries(stack: UpStack, secret: str) -> None:
    """A ping and a push the receiver ignores, signed with its real secret."""
    for event, body in (("ping", {"zen": "hi"}), ("push", {"ref": "refs/heads/other", "after": "a" * 40})):
        raw = json.dumps(body).encode()
        signature = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        answer = httpx.post(
            stack.printed("webhook URL"),
            content=raw,
            timeout=30,
            headers={
                "X-GitHub-Event": event,
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": signature,
                "Content-Type": "application/json",
            },
        )
        assert answer.status_code in (200, 202), answer.text


def database_cells(db: Path) -> Iterator[tuple[str, str]]:
    """(table, cell text) for every cell of every table of the server's SQLite database."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in connection.execute(f'SELECT * FROM "{table}"'):  # table names from the database itself
                for cell in row:
                    if cell is not None:
                        yield table, cell.decode(errors="replace") if isinstance(cell, bytes) else str(cell)


def table_counts(db: Path, *tables: str) -> dict[str, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return {t: connection.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}


def places_to_search(stack: UpStack, storage: Path) -> dict[str, list[str]]:
    """Where -> texts: every table and file of the server's database, the stack's logs, the task results."""
    db = stack.home / "prefect" / "prefect.db"
    counts = table_counts(
        db,
        "log",
        "artifact",
        "flow_run",
        "flow_run_state",
        "flow_run_input",
        "task_run",
        "task_run_state",
        "block_document",
        "events",
    )
    assert all(counts.values()), f"a table to search is empty: {counts}"
    places: dict[str, list[str]] = {}
    for table, text in database_cells(db):
        places.setdefault(f"database table {table}", []).append(text)
    for raw in sorted(db.parent.glob("prefect.db*")):
        places[f"database file {raw.name}"] = [raw.read_bytes().decode("latin-1")]
    for log in ("prefect-server", "worker", "webhook"):
        places[f"{log} log"] = [(stack.home / "logs" / f"{log}.log").read_text(errors="replace")]
    results = [p for p in storage.rglob("*") if p.is_file()]
    assert results, "no task result was stored"
    places["stored task results"] = [p.read_bytes().decode("latin-1") for p in results]
    return places


def test_no_planted_secret_anywhere_after_a_lifecycle_to_prod_and_a_failing_deploy(
    up_stack: UpStack, sandbox, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    stack = up_stack
    mark = f"leak{secrets.token_hex(6)}"
    kubeconfig = yaml.safe_load(Path(sandbox.env["KUBECONFIG"]).read_text())
    markers = {
        "hub sops secret (proxy token)": f"{mark}proxytoken",
        "hub sops secret (hub config)": f"{mark}hubpassword",
        "GCP block private key": f"{mark}gcpprivatekey",
        "AWS block secret key": f"{mark}awssecretkey",
        "Azure block secret": f"{mark}azureclientsecret",
        "kubeconfig block token": kubeconfig["users"][0]["user"]["token"],
        "registry block password": sandbox.env["HUBPLOY_REGISTRY_PASSWORD"],
        "webhook secret block": stack.printed("webhook secret"),
        "Prefect auth string": stack.auth_string.partition(":")[2],
    }
    assert all(len(value) >= 20 for value in markers.values()), "markers must be distinctive"
    plant(markers, sandbox, stack)
    env = {**sandbox.env, "PATH": f"{VENV_BIN}{os.pathsep}{sandbox.env['PATH']}"}
    hub = f"leak{secrets.token_hex(3)}"
    repo = make_repo(tmp_path / "work", hub, markers, env)
    origin = tmp_path / "origin.git"
    repo.git("init", "--bare", "--quiet", str(origin))
    repo.git("branch", "prod")
    repo.git("push", "--quiet", str(origin), "staging", "prod")
    storage = tmp_path / "results"
    leaky = tmp_path / "leaky-bin"
    leaky.mkdir()
    for _, cli in CLOUD_HUBS.values():
        (leaky / cli).write_text(LEAKY_CLI)
        (leaky / cli).chmod(0o755)
    try:
        lifecycle_to_prod(stack, repo, origin, hub, storage)
        failing_prod_deploy(stack, repo, origin, storage, f"{leaky}{os.pathsep}{env['PATH']}")
        webhook_deliveries(stack, markers["webhook secret block"])
        time.sleep(5)  # logs and events reach the server in batches
    finally:
        for name in (hub, *CLOUD_HUBS):
            for env_name in ("staging", "prod"):
                release = f"{name}-{env_name}"
                subprocess.run(
                    [env["HELM_EXECUTABLE"], "uninstall", release, "-n", release],
                    env=env,
                    capture_output=True,
                    check=False,
                )

    places = places_to_search(stack, storage)
    assert any("refused these credentials" in text for text in places["worker log"])  # the failures logged
    leaks = sorted(
        {
            (what, where)
            for what, value in markers.items()
            for pattern in encodings(value)
            for where, texts in places.items()
            for text in texts
            if pattern in text
        }
    )
    assert leaks == [], f"planted secrets found: {leaks}"
    assert stat.S_IMODE(stack.auth_file.stat().st_mode) == 0o600
