"""Every setting the docs name exists in the settings class."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_setting_the_docs_name_exists():
    from model_store import Settings

    names = {f"PYRAMIDNET_{field.upper()}" for field in Settings.model_fields}
    names.add("PYRAMIDNET_API_KEY")  # scripts/classify_dir.py's, the client side of PYRAMIDNET_API_KEYS
    documents = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "deploy").rglob("*.yaml")]
    mentioned = {name for path in documents for name in re.findall(r"PYRAMIDNET_[A-Z_]+[A-Z]", path.read_text())}
    assert mentioned - names == set()


def test_every_setting_has_its_row_in_the_configuration_page():
    from model_store import Settings

    page = (REPO / "docs" / "configuration.md").read_text()
    rows = set(re.findall(r"^\| `(PYRAMIDNET_[A-Z_]+)` \|", page, re.MULTILINE))
    assert {f"PYRAMIDNET_{field.upper()}" for field in Settings.model_fields} - rows == set()
