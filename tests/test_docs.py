"""Docs that cannot drift: the generated command reference, quoted defaults, help summaries, links.

When one of these fails after a code change: run ``python -m ferdata.docgen`` (rewrites
docs/commands.md and lists every stale quoted default), then fix the listed prose by hand.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ferdata import docgen
from ferdata.cli import cli
from ferdata.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
DOCS = docgen.doc_files(ROOT)


def test_commands_page_is_generated_from_the_current_commands() -> None:
    page = ROOT / docgen.COMMANDS_PAGE
    assert page.exists(), f"{docgen.COMMANDS_PAGE} is missing; run `python -m ferdata.docgen`"
    assert page.read_text(encoding="utf-8") == docgen.render_commands_md(), (
        f"{docgen.COMMANDS_PAGE} differs from the commands' --help; run `python -m ferdata.docgen`"
    )


def test_commands_page_has_every_command_and_its_options() -> None:
    text = (ROOT / docgen.COMMANDS_PAGE).read_text(encoding="utf-8")
    for path, _cmd in docgen.iter_commands():
        assert f"## {' '.join(['ferdata', *path])}\n" in text
    # an option and its default, as --help prints them
    assert "--threshold" in text.split("## ferdata dedupe\n", 1)[1].split("\n## ", 1)[0]
    assert f"`threshold` ({docgen.resolve_default('dedupe.threshold')})" in text  # the steps table


def test_quoted_defaults_match_the_code() -> None:
    stale = docgen.check_defaults(DOCS)
    assert not stale, "quoted defaults differ from the code (fix the prose):\n" + "\n".join(map(str, stale))


def test_the_main_defaults_are_quoted_through_spans() -> None:
    keys = {key for path in DOCS for _, key, _ in docgen.find_spans(path.read_text(encoding="utf-8"))}
    readme_keys = {key for _, key, _ in docgen.find_spans((ROOT / "README.md").read_text(encoding="utf-8"))}
    assert "recipe:fer2013-improved.dedupe.threshold" in readme_keys
    assert {"dedupe.threshold", "dedupe.min_score", "crop.size", "upscale.size"} <= keys


def test_a_stale_or_unknown_default_is_caught(tmp_path: Path) -> None:
    actual = docgen.resolve_default("dedupe.threshold")
    page = tmp_path / "page.md"
    page.write_text(
        f"radius <!-- default: dedupe.threshold -->{actual}<!-- /default --> (fine)\n"
        f"| `--threshold` | <!-- default: dedupe.threshold -->`{actual + 2}`<!-- /default --> |\n"
        "score <!-- default: recipe:fer2013-improved.dedupe.min_score -->0.44<!-- /default -->, "
        "flag rate <!-- default: cli:refine --max-flag-rate -->0.5<!-- /default -->\n"
        "syntax: `<!-- default: dedupe.threshold -->3<!-- /default -->` (inline code: skipped)\n"
        "```\n<!-- default: dedupe.threshold -->3<!-- /default -->\n```\n",
        encoding="utf-8",
    )
    stale = docgen.check_defaults([page])
    assert [(s.line, s.key, s.quoted, s.actual) for s in stale] == [(2, "dedupe.threshold", f"`{actual + 2}`", str(actual))]
    page.write_text("<!-- default: dedupe.radius -->18<!-- /default -->\n", encoding="utf-8")
    with pytest.raises(UsageError, match="no parameter 'radius'.*threshold"):
        docgen.check_defaults([page])
    with pytest.raises(UsageError, match="no variable"):
        docgen.resolve_default("recipe:fer2013-improved.variables.nope")


def test_docgen_check_through_the_real_entry_point(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "ferdata.docgen", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # a copy of the docs with a stale page and a stale default fails and says what to run
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("radius <!-- default: dedupe.threshold -->3<!-- /default -->\n")
    (tmp_path / "docs" / "commands.md").write_text("old\n")
    bad = subprocess.run([sys.executable, "-m", "ferdata.docgen", "--check", "--root", str(tmp_path)],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert "out of date; run `python -m ferdata.docgen`" in bad.stderr
    assert "README.md:1: dedupe.threshold is quoted as '3'" in bad.stderr
    assert (tmp_path / "docs" / "commands.md").read_text() == "old\n"  # --check writes nothing


def _groups() -> list[tuple[list[str], click.Group]]:
    return [(path, cmd) for path, cmd in docgen.iter_commands() if isinstance(cmd, click.Group)]


@pytest.mark.parametrize("width", [80, 100, 200])
def test_every_command_summary_in_help_is_a_whole_sentence(width: int) -> None:
    for path, group in _groups():
        result = CliRunner().invoke(cli, [*path, "--help"], prog_name="ferdata", terminal_width=width)
        assert result.exit_code == 0
        listing = result.output.split("Commands:\n", 1)[1]
        for name, cmd in group.commands.items():
            # click's own arithmetic (HelpFormatter width, then Group.format_commands' limit)
            limit = max(min(width, 100) - 2, 50) - 6 - max(map(len, group.commands))
            summary = cmd.get_short_help_str(limit)
            where = f"`ferdata {' '.join([*path, name])}` at {width} columns: {summary!r}"
            assert not summary.endswith("..."), f"summary cut by click: {where}; set short_help in ferdata/cli.py"
            assert summary.endswith("."), f"summary is not a whole sentence: {where}"
            assert summary.count("(") == summary.count(")"), f"summary cut inside parentheses: {where}"
            assert name in listing
        assert not re.search(r"\.\.\.$", listing, re.M), listing


def test_readme_keeps_the_commands_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'pip install -e ".[dev]" && ferdata demo --out ferdata-demo' in readme
    assert "python -m pytest -q" in readme
    assert "ferdata build fer2013-improved" in readme
    assert "python -m pytest -q" in (ROOT / ".ci" / "run").read_text()
    assert len(readme.splitlines()) <= 200, "the README is the newcomer's page: details go to docs/"


LINK = re.compile(r"\]\((?!https?://|mailto:)([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown page (lower case, punctuation dropped, -N for repeats)."""
    seen: dict[str, int] = {}
    anchors = set()
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not line.startswith("#"):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def test_relative_links_and_anchors_in_readme_and_docs_resolve() -> None:
    broken = []
    for path in DOCS:
        for target in LINK.findall(path.read_text(encoding="utf-8")):
            file, _, anchor = target.partition("#")
            dest = (path.parent / file) if file else path
            if not dest.exists():
                broken.append(f"{path.relative_to(ROOT)} -> {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{path.relative_to(ROOT)} -> {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_readme_links_a_doc_page_for_every_top_level_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Commands", 1)[1].split("\n## ", 1)[0]
    for name in cli.commands:
        row = next((line for line in table.splitlines() if f"`ferdata {name}" in line), None)
        assert row is not None, f"README's command table lacks `ferdata {name}`"
        assert "(docs/" in row, f"README's row for `ferdata {name}` links no doc page: {row}"
