"""The repository-wide files `hubploy init` writes: the umbrella chart, hubploy-repo.yaml, .sops.yaml,
.gitignore, the operator's README and the pull-request workflow. Each is a function of the facts in
:class:`RepoFacts`; values are quoted as JSON strings, which YAML reads back unchanged."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHART_NAME = "jupyterhub"
CHART_DIR = "hub"
SECRETS_PATH_REGEX = "deployments/[^/]+/secrets/.*"
WORKFLOW_FILE = ".github/workflows/hubploy.yaml"
CHANGED_HUBS_STEP = "List the hubs this pull request changes"
Z2JH_DOCS = "https://z2jh.jupyter.org/en/stable"


def q(value: str) -> str:
    """``value`` as a YAML scalar that reads back as the same string."""
    return json.dumps(value)


@dataclass(frozen=True)
class ChartSource:
    """Where the umbrella chart's jupyterhub dependency comes from."""

    version: str
    repository: str  # https://..., oci://..., or file://... (relative to hub/)
    kube_version: str | None = None  # the local chart's kubeVersion, repeated by the umbrella chart
    local_dir: str | None = None  # repo-relative dir of a local chart (its changes touch every hub)
    copy_from: Path | None = None  # the local chart outside the repository, copied to local_dir


@dataclass(frozen=True)
class RepoFacts:
    hub: str
    chart: ChartSource
    recipient: str
    cluster: dict[str, Any] | None  # the hub's cluster section (None: the caller's KUBECONFIG)
    has_images: bool
    pip_spec: str


def chart_yaml(chart: ChartSource) -> str:
    kube = (
        (
            "# helm checks the kubeVersion of the chart it installs only, so the dependency's is repeated.\n"
            f"kubeVersion: {q(chart.kube_version)}\n"
        )
        if chart.kube_version
        else ""
    )
    description = (
        "The umbrella chart every hub of this repository deploys: Zero to JupyterHub as a "
        f"dependency, configured under `{CHART_NAME}:`."
    )
    return (
        f"apiVersion: v2\nname: {CHART_DIR}\ndescription: {q(description)}\n"
        f"type: application\nversion: 0.1.0\n{kube}"
        f"dependencies:\n  - name: {CHART_NAME}\n    version: {q(chart.version)}\n"
        f"    repository: {q(chart.repository)}\n"
    )


def chart_values_yaml(chart: ChartSource) -> str:
    return (
        f"# Values every hub shares, for the jupyterhub chart {chart.version} under `{CHART_NAME}:`.\n"
        "# Each hub's deployments/<hub>/config/common.yaml, config/<env>.yaml and secrets/<env>.yaml\n"
        f"# layer over them, in that order. Every key: {Z2JH_DOCS}/resources/reference.html\n"
        f"{CHART_NAME}:\n"
        "  proxy:\n"
        "    service:\n"
        "      # Users reach the hub through the proxy-public Service, here a cloud load balancer\n"
        "      # (hubploy's health check finds the hub there too). Behind an ingress: ClusterIP, and\n"
        "      # ingress.enabled.\n"
        "      type: LoadBalancer\n"
    )


def chart_values_schema() -> str:
    description = (
        f"The top level only, so that a misspelt `{CHART_NAME}:` is an error instead of being "
        f"ignored; the {CHART_NAME} chart's own schema checks what is under it. Add a property "
        "here for each template of your own that reads values."
    )
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "values of the hub umbrella chart",
        "description": description,
        "type": "object",
        "additionalProperties": False,
        "required": [CHART_NAME],
        "properties": {
            CHART_NAME: {"type": "object", "description": f"Values of the {CHART_NAME} dependency."},
            "global": {"type": "object", "description": "Values helm shares with the dependencies."},
        },
    }
    return json.dumps(schema, indent=2) + "\n"


def repo_settings_yaml(chart: ChartSource) -> str:
    shared = (
        (
            "# The local jupyterhub chart is part of every hub: its changes deploy them all.\n"
            f"shared_paths:\n  - {q(chart.local_dir + '/*')}\n"
        )
        if chart.local_dir
        else ""
    )
    return (
        "# Repository-wide hubploy settings. `hubploy schema --repo` prints every key.\n"
        f"chart: {CHART_DIR}\n"
        "# Pull requests go to staging; prod only ever receives merges of staging.\n"
        f"staging_branch: staging\nprod_branch: prod\n{shared}"
    )


def sops_yaml(recipient: str) -> str:
    return (
        "# sops encrypts every file under a hub's secrets/ to these age recipients. To give someone\n"
        "# access, add their recipient (comma-separated), then run `sops updatekeys FILE` for each\n"
        "# secret file.\n"
        f"creation_rules:\n  - path_regex: {q(SECRETS_PATH_REGEX)}\n    age: {q(recipient)}\n"
    )


def gitignore() -> str:
    return (
        "# Chart dependencies helm downloads (`helm dependency update hub`)\nhub/charts/\n"
        "# What the pull-request workflow renders\nrendered/\nchanged-hubs.txt\n"
        "# Keys and decrypted secrets never belong in the repository\n*.key\n*.decrypted*\n"
        "__pycache__/\n.venv/\n"
    )


_WHERE = {
    "kubeconfig": "the kubeconfig's cluster",
    "gcloud": "GKE cluster `{cluster}` in project `{project}` ({zone})",
    "aws": "EKS cluster `{cluster}` in `{region}`",
    "azure": "AKS cluster `{cluster}` in resource group `{resource_group}`",
}


def _cluster_text(facts: RepoFacts) -> str:
    section = facts.cluster
    if section is None:
        return (
            "Deploys use your own `KUBECONFIG` (its current context). To pin the cluster, run `hubploy "
            "init` with `--kubeconfig`, or add a `cluster:` section to the hub's hubploy.yaml."
        )
    settings = section[section["provider"]]
    key = next((settings[k] for k in ("filename", "service_key", "auth_file") if k in settings), None)
    secrets = f"deployments/{facts.hub}/secrets"
    if key:
        how = f"the key file `{secrets}/{key}` (sops-encrypted; `sops {secrets}/{key}` edits it)"
    elif "credentials_block" in settings:
        how = f"the Prefect credentials block `{settings['credentials_block']}`"
    elif "role_arn" in settings:
        how = f"the IAM role `{settings['role_arn']}`"
    else:
        how = "application default credentials"
    return f"Deploys reach {_WHERE[section['provider']].format(**settings)} with {how}."


def _steps(facts: RepoFacts) -> str:
    hub = facts.hub
    steps = [
        (
            "`hubploy validate` checks every hub (hubploy.yaml, the values against the chart's schema, the "
            "secrets) without touching a cluster."
        ),
        f"`hubploy render {hub} staging` prints what a deploy would apply, secrets redacted.",
        *(
            [
                (
                    f"`hubploy build {hub} --check-registry --push` builds the user image in "
                    f"`deployments/{hub}/image/` and pushes it (its tag is the last commit that changed the "
                    "directory: commit first)."
                )
            ]
            if facts.has_images
            else []
        ),
        (
            f"`hubploy deploy {hub} hub staging` deploys to staging and checks that the hub answers "
            "(a failed "
            "upgrade or health check is rolled back). Its `helm dependency update` writes `hub/Chart.lock`: "
            "commit it."
        ),
        (
            "Push to GitHub: `git remote add origin <URL>`, then `git push -u origin staging prod`, and make "
            "`staging` the default branch. Changes go to `staging` by pull request; a pull request from "
            "`staging` to `prod` promotes them."
        ),
        (
            "Add the repository secret `SOPS_AGE_KEY` (the `AGE-SECRET-KEY-1...` line of the key file): the "
            "workflow then validates with the secrets decrypted, renders the hubs a pull request changes and "
            "uploads the renders (secrets redacted). Without it, it validates without decrypting and renders "
            "nothing; pull requests from forks never get it."
        ),
        (
            f"Before real users arrive, replace the shared-password authenticator in "
            f"`deployments/{hub}/config/common.yaml` with your identity provider "
            f"({Z2JH_DOCS}/administrator/authentication.html)."
        ),
    ]
    return "".join(f"{number}. {step}\n" for number, step in enumerate(steps, 1))


_LAYOUT = (
    (
        "`hub/`",
        (
            "The umbrella chart every hub deploys: the `jupyterhub` chart as a dependency; "
            "`hub/values.yaml` holds what all hubs share"
        ),
    ),
    (
        "`deployments/<hub>/hubploy.yaml`",
        ("How hubploy builds the hub's image and reaches its cluster (`hubploy schema` lists every key)"),
    ),
    ("`deployments/<hub>/config/`", "The hub's values: `common.yaml`, then `staging.yaml` or `prod.yaml`"),
    (
        "`deployments/<hub>/secrets/`",
        ("Its secret values (`staging.yaml`, `prod.yaml`) and key files, encrypted with sops"),
    ),
    ("`hubploy-repo.yaml`", "Repository-wide settings: the chart directory, the staging and prod branches"),
    ("`.sops.yaml`", "Who can decrypt the secrets"),
    (f"`{WORKFLOW_FILE}`", "Pull-request checks: validate every hub, render the hubs a change touches"),
)


def readme(facts: RepoFacts) -> str:
    hub = facts.hub
    layout = "".join(f"| {path} | {what} |\n" for path, what in _LAYOUT)
    return (
        f"# JupyterHub deployments\n\n"
        f"This repository deploys JupyterHubs to Kubernetes with [Zero to JupyterHub]({Z2JH_DOCS}) (the "
        f"`{CHART_NAME}` chart {facts.chart.version}) and hubploy. `hubploy init` wrote it, with one hub: "
        f"`{hub}`.\n\n| Path | What it holds |\n|---|---|\n{layout}\n"
        f"A deploy layers the values in this order: the chart's defaults, `hub/values.yaml`, "
        f"`config/common.yaml`, `config/<env>.yaml`, `secrets/<env>.yaml`. {_cluster_text(facts)}\n\n"
        f"## The key\n\n"
        f"The secrets are encrypted to the age recipient `{facts.recipient}`. Whoever validates or deploys "
        f"needs its identity (the private key file), kept outside this repository:\n\n"
        f"    export SOPS_AGE_KEY_FILE=/path/to/the.key\n\n"
        f"Never commit it. `sops deployments/{hub}/secrets/staging.yaml` edits a secret file. To give a "
        "colleague access, add their recipient to `.sops.yaml` and run `sops updatekeys` on every file "
        "under `deployments/*/secrets/`.\n\n"
        f"## Next steps\n\n{_steps(facts)}\n"
        f"More hubs: `hubploy new-hub NAME --from {hub}` copies this hub's configuration (not its "
        f"secrets).\n"
    )


def workflow(facts: RepoFacts) -> str:
    return f"""# Pull requests: `hubploy validate` for every hub, then `hubploy render` for each hub and
# environment the pull request changes (written by `hubploy init`). The repository secret
# SOPS_AGE_KEY (the age identity, AGE-SECRET-KEY-1...) decrypts the secret values; without it,
# validate checks them without decrypting and nothing is rendered.
name: hubploy
on:
  pull_request:
    branches: [staging, prod]
permissions:
  contents: read
jobs:
  validate:
    runs-on: ubuntu-latest
    env:
      SOPS_AGE_KEY: ${{{{ secrets.SOPS_AGE_KEY }}}}
      BASE: origin/${{{{ github.base_ref }}}}
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: 0
      - uses: actions/setup-python@v5
        with:
          python-version: "3.12"
      - uses: azure/setup-helm@v4
      - name: Install hubploy
        run: pip install {q(facts.pip_spec)}
      - name: Validate every hub
        run: |
          if [ -n "$SOPS_AGE_KEY" ]; then hubploy validate; else hubploy validate --no-decrypt; fi
      - name: {CHANGED_HUBS_STEP}
        run: |
          python - <<'EOF' > changed-hubs.txt
          import os
          from hubploy.git import changed_files
          from hubploy.layout import load_repo
          from hubploy.planner import plan_repo
          repo = load_repo(".")
          for name in plan_repo(repo, changed_files(repo.root, os.environ["BASE"] + "...HEAD")).hub_names:
              for env in repo.load_hub(name).environments:
                  print(name, env)
          EOF
          cat changed-hubs.txt
      - name: Render them
        if: env.SOPS_AGE_KEY != ''
        run: |
          mkdir -p rendered
          while read -r hub env; do
            echo "hubploy render $hub $env"
            hubploy render "$hub" "$env" < /dev/null > "rendered/$hub-$env.yaml"
          done < changed-hubs.txt
      - uses: actions/upload-artifact@v4
        if: env.SOPS_AGE_KEY != ''
        with:
          name: rendered
          path: rendered/
          if-no-files-found: ignore
"""
