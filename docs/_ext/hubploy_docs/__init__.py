"""Sphinx extension of hubploy's documentation: before the documents are read, it writes the reference
pages' generated parts into ``reference/_generated/`` (not committed) from the code itself: the JSON
Schemas `hubploy schema` prints, the `hubploy` argument parser, and prefect.yaml with the flows'
signatures. The hand-written pages ``{include}`` them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sphinx.application import Sphinx

GENERATED = Path("reference") / "_generated"


def generated_pages(project_root: Path) -> dict[str, str]:
    """{file name: Markdown} of every generated part."""
    from hubploy.cli.main import build_parser
    from hubploy.config.models import HubConfig, RepoSettings
    from hubploy_docs.cli_commands import commands
    from hubploy_docs.config_keys import config_keys
    from hubploy_docs.flow_deployments import flow_deployments
    from hubploy_docs.markdown import cli_reference, config_reference, flows_reference

    return {
        "hubploy-yaml.md": config_reference(config_keys(HubConfig.model_json_schema()), "hubploy-yaml"),
        "hubploy-repo-yaml.md": config_reference(
            config_keys(RepoSettings.model_json_schema()), "hubploy-repo-yaml"
        ),
        "cli.md": cli_reference(commands(build_parser(None))),
        "flows.md": flows_reference(flow_deployments(project_root / "prefect.yaml")),
    }


def write_generated(app: Sphinx) -> None:
    target = Path(app.srcdir) / GENERATED
    target.mkdir(parents=True, exist_ok=True)
    for name, text in generated_pages(Path(app.srcdir).parent).items():
        path = target / name
        if not path.is_file() or path.read_text() != text:  # unchanged files keep Sphinx's cache valid
            path.write_text(text)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", write_generated)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
