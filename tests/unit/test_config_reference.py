"""The generated configuration reference names exactly the keys of conf/, file by file."""

from __future__ import annotations

import re

import pytest
import yaml

from aeflow.docs import config_reference
from tests.helpers import REPO

CONF = REPO / "conf"


def conf_keys() -> dict[str, set[str]]:
    """{conf/<file>: its dotted keys}, read with plain YAML (independently of the generator)."""
    keys: dict[str, set[str]] = {}
    for path in sorted(CONF.glob("**/*.yaml")):
        text = path.read_text()
        data = {k: v for k, v in (yaml.safe_load(text) or {}).items() if k != "defaults"}
        group = path.parent.name if path.parent != CONF else None
        scoped = group is not None and group != "search" and "# @package _global_" not in text
        prefix = f"{group}." if scoped else ""
        found: set[str] = set()

        def walk(node: dict, dotted: str) -> None:
            for key, value in node.items():
                if isinstance(value, dict) and value:
                    walk(value, f"{dotted}{key}.")
                else:
                    found.add(f"{prefix}{dotted}{key}")  # noqa: B023 (called at once, in this loop)

        walk(data, "")
        keys[path.relative_to(REPO).as_posix()] = found
    return keys


def reference_keys(page: str) -> dict[str, set[str]]:
    """{conf/<file>: the keys of its table} from the rendered page."""
    keys: dict[str, set[str]] = {}
    current = None
    for line in page.splitlines():
        if heading := re.match(r"^### `(conf/\S+\.yaml)`$", line):
            current = heading[1]
            keys[current] = set()
        elif current and (row := re.match(r"^\| `([^`]+)` \|", line)):
            keys[current].add(row[1])
    return keys


@pytest.fixture(scope="module")
def page() -> str:
    return config_reference.render(CONF)


def test_every_key_of_every_conf_file_is_in_the_reference_and_no_other(page):
    expected, shown = conf_keys(), reference_keys(page)
    assert sorted(shown) == sorted(expected), "files missing or extra in the reference"
    for name, keys in expected.items():
        assert shown[name] == keys, (name, sorted(keys - shown[name]), sorted(shown[name] - keys))


def test_types_defaults_and_allowed_values_come_from_the_schema_and_the_code(page):
    rows = {
        m[1]: m[0]
        for m in re.finditer(r"^\| `([^`]+)` \|.*$", page, flags=re.M)
        if m[1].startswith(("performance.", "mlflow.", "trainer.precision", "model.encoder.norm"))
    }
    # The schema's dataclass: `str | None`; the default is conf/'s value.
    assert "| `str \\| None` | `null` |" in rows["mlflow.tracking_uri"]
    assert "one of `highest`, `high`, `medium`" in rows["performance.float32_matmul_precision"]
    # A `_target_` class's signature (Lightning's Trainer) gives the type and the allowed values.
    assert "`bf16-mixed`" in rows["trainer.precision"]
    assert "one of `none`, `batch`, `layer`" in rows["model.encoder.norm"]


def test_a_comment_above_a_key_in_conf_is_its_description():
    header, notes = config_reference.comments(
        "# The file.\n\nsection:\n  # What a does.\n  a: 1  # and more\n  b: [1, 2]\n  nested:\n    c: x\n"
    )
    assert header == "The file."
    assert notes == {"section.a": "What a does. and more"}


def undescribed(page: str) -> list[str]:
    """`conf/<file>: key` for each row of the page whose last cell ("what it does") is empty."""
    missing: list[str] = []
    current = None
    for line in page.splitlines():
        if heading := re.match(r"^### `(conf/\S+\.yaml)`$", line):
            current = heading[1]
        elif current and (row := re.match(r"^\| `([^`]+)` \|", line)):
            cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]  # `\|` is a pipe inside a cell
            if cells[-1].strip() in ("", "–"):
                missing.append(f"{current}: {row[1]}")
    return missing


def test_every_key_of_every_conf_file_says_what_it_does(page):
    assert reference_keys(page), "no tables found in the reference"
    missing = undescribed(page)
    assert not missing, (
        f"{len(missing)} key(s) with no description; add a comment above the key in its conf/ file "
        "(or an `Args:` entry to the docstring of the class its `_target_` names):\n" + "\n".join(missing)
    )
