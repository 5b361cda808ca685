"""The documentation holds together: links resolve inside the repository, every CLI command is
documented, and the README stays a front door (pure: reads files, imports the CLI, starts nothing)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_MAX_BYTES = 16_000
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked (links and headings in
    code are examples, not links)."""
    out, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def links(text: str) -> list[str]:
    return [m.group(1) for line in prose_lines(text) for m in _LINK.finditer(_CODE_SPAN.sub("", line))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text (code ticks, emphasis and link targets gone),
    lower-cased, every character but letters, digits, `_`, `-` and spaces dropped, spaces as `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in `path`, duplicates numbered as GitHub numbers them (`x`, `x-1`, …)."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        m = _HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def link_problems(page: Path) -> list[str]:
    """What is wrong with each relative link of `page`: a file that does not exist, an anchor with no
    heading, a target outside the repository."""
    problems = []
    for target in links(page.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        if _SCHEME.match(target) or target.startswith(("/", "\\")):
            problems.append(f"{target}: not a relative link into the repository")
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        try:
            resolved.relative_to(ROOT)
        except ValueError:
            problems.append(f"{target}: points outside the repository")
            continue
        if not resolved.exists():
            problems.append(f"{target}: no such file")
            continue
        if anchor:
            if resolved.suffix != ".md":
                problems.append(f"{target}: an anchor into a file that is not Markdown")
            elif anchor not in anchors(resolved):
                problems.append(f"{target}: no heading with anchor #{anchor} in {resolved.relative_to(ROOT)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(page):
    assert link_problems(page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_names_a_path_outside_the_repository(page):
    text = page.read_text(encoding="utf-8")
    assert "../shared" not in text and "/work/" not in text


def test_the_docs_index_lists_every_page():
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    listed = {Path(t.partition("#")[0]).name for t in links(index)}
    missing = [p.name for p in PAGES if p.parent.name == "docs" and p.name != "index.md" and p.name not in listed]
    assert missing == []


def cli_commands() -> list[str]:
    """Every command of the `handoff` app as typed: `NAME`, or `GROUP NAME` for a group's commands
    (typer vendors click, so groups are found by their `commands`, not by class)."""
    import typer

    from handoff.cli import app

    def walk(command, prefix):
        subcommands = getattr(command, "commands", None) or {}
        if not subcommands:
            return [" ".join(prefix)]
        found = []
        for name, sub in sorted(subcommands.items()):
            if not getattr(sub, "hidden", False):
                found += walk(sub, [*prefix, name])
        return found

    return walk(typer.main.get_command(app), [])


def test_every_cli_command_is_documented():
    commands = cli_commands()
    assert len(commands) >= 20, commands  # the walk found the app's commands
    text = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)
    missing = [c for c in commands if not re.search(r"handoff\s+" + r"\s+".join(map(re.escape, c.split())) + r"\b", text)]
    assert missing == [], f"commands not shown as `handoff NAME` in README.md or docs/: {missing}"


def test_readme_is_a_front_door():
    size = README.stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size:,} bytes; move detail into docs/ (limit {README_MAX_BYTES:,})"


def test_slugs_follow_github():
    assert slug("`ray up`: a real cluster") == "ray-up-a-real-cluster"
    assert slug("Its own packages: `model.requirements`") == "its-own-packages-modelrequirements"
    assert slug("Batch inference (`bench/batch_predict.py`)") == "batch-inference-benchbatch_predictpy"
    assert slug("Drift at any window size (`bench/decisions.py --drift`)") == \
        "drift-at-any-window-size-benchdecisionspy---drift"
