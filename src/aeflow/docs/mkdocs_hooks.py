"""MkDocs hooks (mkdocs.yml `hooks:`): the site's generated parts.

- the home page is README.md, its links into docs/ made relative to the site;
- configuration-reference.md is generated from conf/ and the code (aeflow.docs.config_reference);
- every `<!-- aeflow:table NAME -->` block is filled from results/ (aeflow.docs.tables), and the
  build fails when a table of figures shows a number that no record holds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

from aeflow.docs import config_reference, tables
from aeflow.docs.records import RESULTS_DIR, RecordError, held_numbers, load_records

ROOT = Path(__file__).resolve().parents[3]
_state: dict[str, Any] = {}


def readme_as_home(text: str) -> str:
    """README.md with its `docs/...` links and images pointing inside the site."""
    return re.sub(r"\]\(docs/", "](", text)


def on_pre_build(config: Any) -> None:
    try:
        _state["records"] = load_records(ROOT / RESULTS_DIR)
    except RecordError as exc:
        raise PluginError(str(exc)) from None
    _state["held"] = held_numbers(_state["records"])


def on_files(files: Files, config: Any) -> Files:
    home = readme_as_home((ROOT / "README.md").read_text())
    files.append(File.generated(config, "index.md", content=home))
    reference = config_reference.render(ROOT / config_reference.CONF_DIR)
    files.append(File.generated(config, config_reference.PAGE, content=reference))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    records = _state["records"]
    try:
        filled = tables.fill(markdown, records)
    except RecordError as exc:
        raise PluginError(f"{page.file.src_uri}: {exc}") from None
    source = "README.md" if page.file.src_uri == "index.md" else f"docs/{page.file.src_uri}"
    if source in tables.FIGURE_PAGES:
        bad = tables.check_page(filled, _state["held"])
        if bad:
            raise PluginError(
                f"{source}: numbers in a table that no record in {RESULTS_DIR}/ holds ({', '.join(bad)}): "
                "record the measurement with `aeflow record` and show it through a table block"
            )
    return filled
