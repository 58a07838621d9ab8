"""The docs site (mkdocs.yml) builds with --strict, and a broken link fails it.

`make test` builds the real site (the `docs` target); this holds the other
half: that a link to a page or an anchor that does not exist is an error,
not a warning the build shrugs off.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MKDOCS = [sys.executable, "-m", "mkdocs", "build", "--strict"]


def _build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MKDOCS, "--config-file", str(root / "mkdocs.yml"), "--site-dir", str(site)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    return tmp_path


def test_the_docs_build_without_a_warning(copy: Path) -> None:
    built = _build(copy, copy / "site")
    assert built.returncode == 0, built.stderr
    assert (copy / "site" / "architecture" / "index.html").exists()


def test_a_broken_link_or_anchor_fails_the_build(copy: Path) -> None:
    page = copy / "docs" / "alerts.md"
    broken = "See [gone](no-such-page.md) and [moved](semantics.md#no-such-heading).\n"
    page.write_text(page.read_text(encoding="utf-8") + "\n" + broken, encoding="utf-8")
    built = _build(copy, copy / "site")
    assert built.returncode != 0
    assert "no-such-page.md" in built.stderr
    assert "no-such-heading" in built.stderr
