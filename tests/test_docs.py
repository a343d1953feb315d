"""The documentation holds together: every relative link in README.md and docs/ resolves (file and
heading), and every command of the README's quick start exists."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings (outside code blocks)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    headings = re.findall(r"^#+\s+(.+?)\s*$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http(s)://, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: no heading '#{anchor}' in {file.relative_to(ROOT)}")
    assert not broken, broken


def test_every_docs_page_is_linked_from_the_readme():
    readme = ROOT / "README.md"
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in LINK.findall(readme.read_text())}
    assert not [p.name for p in PAGES[1:] if p.resolve() not in linked]


def test_quick_start_commands_exist():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    lines = [ln.split("#")[0].strip() for block in re.findall(r"```bash\n(.*?)```", quick, flags=re.S)
             for ln in block.splitlines()]
    commands = [c.strip() for ln in lines for c in ln.split(";") if c.strip()]
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    make = [c.split()[1] for c in commands if c.startswith("make ")]
    assert {"run", "test"} <= set(make) and set(make) <= targets, (make, targets)
    venv = [c.split()[0] for c in commands if c.startswith(".venv/bin/")]
    assert all((Path(sys.executable).parent / Path(c).name).is_file() for c in venv), venv
