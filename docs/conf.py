"""Sphinx configuration of hubploy's documentation (built by scripts/docs)."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS.parent), str(DOCS / "_ext")]  # the project (reference pages) and our extension

project = "hubploy on Prefect"
author = "hubploy contributors"
copyright = "hubploy contributors"

extensions = ["myst_parser", "sphinxcontrib.mermaid", "hubploy_docs"]
myst_enable_extensions = ["deflist"]
myst_heading_anchors = 3
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "reference/_generated"]
nitpicky = True  # a reference to a page, section, option or key that does not exist fails the build

html_theme = "pydata_sphinx_theme"
html_title = project
html_static_path = ["_static"]
html_css_files = ["runnable.css"]
html_theme_options = {"navigation_depth": 3, "show_toc_level": 2, "secondary_sidebar_items": ["page-toc"]}
