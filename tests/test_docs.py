"""The documentation: the MkDocs site builds with --strict, the README stays short and keeps
the quick start, and every relative link in README.md and docs/*.md reaches a file."""

import glob
import os
import re
import subprocess
import sys

import pytest
from paths import REPO

# CI runs the second verbatim; the first is the project's main job.
QUICK_START = (
    "python -m pip install -e . && python -m pipeline.run --runner=DirectRunner",
    'python -m pip install -e ".[test]" && python -m pytest -q tests',
)

# [text](target) and ![alt](target), outside code; the target up to a space or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _markdown_files():
    return [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True))


def _without_code(text):
    """The text with fenced blocks and inline code removed (links there are examples, not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def _relative_links(path):
    with open(path, encoding="utf-8") as f:
        text = _without_code(f.read())
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # http:, https:, mailto:, …, and anchors within the page
        yield target


def test_readme_is_short_and_keeps_the_quick_start():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    lines = text.count("\n") + (not text.endswith("\n"))
    assert lines <= 350, f"README.md has {lines} lines; the guides belong under docs/"
    for command in QUICK_START:
        assert command in text, f"README.md lost the quick-start command {command!r}"


def test_every_relative_link_reaches_a_file():
    broken = []
    for path in _markdown_files():
        for target in _relative_links(path):
            file = target.split("#", 1)[0]
            if not file:
                continue
            resolved = os.path.normpath(os.path.join(os.path.dirname(path), file))
            if not os.path.exists(resolved):
                broken.append(f"{os.path.relpath(path, REPO)}: {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)


def test_the_link_check_sees_links():
    """The check above is not vacuous: the README links into docs/ and shows a picture."""
    targets = list(_relative_links(os.path.join(REPO, "README.md")))
    assert any(t.startswith("docs/") and t.endswith(".md") for t in targets), targets
    assert any(t.endswith(".png") for t in targets), targets


def test_docs_cite_papers_not_notes():
    """As the README and the report: the docs name published sources, never the unpublished notes."""
    notes = re.compile(r"the seed's|shared/seed|\bseed \d+\.\d|\bseed (?:fig|table|eq)|of the seed\b", re.IGNORECASE)
    for path in _markdown_files():
        with open(path, encoding="utf-8") as f:
            found = notes.findall(f.read())
        assert not found, (os.path.relpath(path, REPO), found)


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    """`mkdocs build --strict` from the repository root: no broken link or anchor, no page
    left out of the navigation, no griffe warning from the API pages' docstrings."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # mkdocs-material's banner about MkDocs 2.0
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    print(output)
    assert result.returncode == 0, f"mkdocs build --strict failed (exit code {result.returncode}):\n{output}"
    assert os.path.exists(tmp_path / "site" / "index.html")
    assert os.path.exists(tmp_path / "site" / "api" / "sampling" / "index.html")
