"""Documentation that cannot drift: the command reference and the defaults quoted in prose.

Two things are made from the code rather than written by hand:

* ``docs/commands.md``: the ``--help`` of every command and subcommand (through click's
  ``CliRunner``, at a fixed width, so the page is the same on every machine), the registered
  recipe steps with their parameters and defaults, and the packaged recipes.
* quoted defaults: prose in README.md and docs/*.md that quotes a default wraps it in a span,
  ``<!-- default: dedupe.threshold -->18<!-- /default -->``, and the value is checked against
  the code. Keys:

  - ``STEP.FIELD``: the default of a recipe step's config dataclass
    (``ferdata.steps.get_step(STEP).config_cls``), e.g. ``dedupe.threshold``;
  - ``recipe:NAME.STEP.FIELD``: the value a packaged recipe sets, e.g.
    ``recipe:fer2013-improved.dedupe.threshold`` (``recipe:NAME.variables.VAR`` for a variable);
  - ``cli:COMMAND --option``: a command-line option's default, e.g. ``cli:refine --max-flag-rate``.

Run from the repository root::

    python -m ferdata.docgen            # rewrite docs/commands.md, list stale quoted defaults
    python -m ferdata.docgen --check    # write nothing; exit 1 when either is out of date

``tests/test_docs.py`` runs the same checks.

Example:
    >>> resolve_default("dedupe.threshold") == get_step_default("dedupe", "threshold")
    True
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferdata.errors import UsageError

#: Terminal width the help pages are rendered at (the CLI's own max_content_width).
HELP_WIDTH = 100
#: The generated page, relative to the repository root.
COMMANDS_PAGE = Path("docs") / "commands.md"
#: A quoted default: ``<!-- default: KEY -->VALUE<!-- /default -->`` on one line.
DEFAULT_SPAN = re.compile(r"<!--\s*default:\s*(?P<key>[^>]*?)\s*-->(?P<value>.*?)<!--\s*/default\s*-->")
REGENERATE = "python -m ferdata.docgen"


def repo_root() -> Path:
    """The source checkout that holds README.md and docs/ (docs are not part of the wheel)."""
    return Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------
# The command reference


def iter_commands() -> Iterator[tuple[list[str], Any]]:
    """Every command and subcommand as ``(path, click command)``, the root first, by name."""
    import click

    from ferdata.cli import cli

    def walk(cmd: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        yield path, cmd
        if isinstance(cmd, click.Group):
            for name in sorted(cmd.commands):
                yield from walk(cmd.commands[name], [*path, name])

    yield from walk(cli, [])


def help_text(path: Sequence[str]) -> str:
    """``ferdata PATH --help`` as a user sees it, at :data:`HELP_WIDTH` columns."""
    from click.testing import CliRunner

    from ferdata.cli import cli

    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="ferdata", terminal_width=HELP_WIDTH)
    if result.exit_code != 0:
        raise UsageError(f"`ferdata {' '.join(path)} --help` exited {result.exit_code}: {result.output.strip()}")
    return result.output.rstrip() + "\n"


def _anchor(title: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def _md_text(text: str) -> str:
    """``text`` safe as Markdown prose: ``<`` outside code spans escaped (``<id>`` is not a tag)."""
    parts = text.split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))


def _fmt(value: Any) -> str:
    """A default as prose quotes it: 18, 0.65, test,validation,train, true, none."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_fmt(v) for v in value)
    return str(value)


def _field_default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _steps_section() -> list[str]:
    from ferdata.steps import load_steps

    lines = [
        "## Recipe steps",
        "",
        "A recipe (`pipelines/NAME.yaml`) is a list of `{step: NAME, PARAMETER: VALUE, ...}`; these are the "
        "registered steps, their parameters and defaults (the config dataclass of each step). "
        "Source steps make a dataset; the others read one.",
        "",
        "| step | kind | parameters (default) | what it does |",
        "|---|---|---|---|",
    ]
    for name, step in sorted(load_steps().items()):
        if not step.fn.__module__.startswith("ferdata."):
            continue  # a step registered by a test or a user's module is not part of ferdata
        params = []
        for field in dataclasses.fields(step.config_cls):
            default = _field_default(field)
            shown = "" if default is dataclasses.MISSING else f" ({_fmt(default) or 'empty'})"
            params.append(f"`{field.name}`{shown}")
        kind = "source" if step.source else "step"
        cells = [f"`{name}`", kind, ", ".join(params) or "-", _md_text(step.summary.replace("``", "`"))]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def _recipes_section() -> list[str]:
    from ferdata.pipeline import recipe_names, recipe_path
    from ferdata.resources import load_yaml

    lines = ["## Packaged recipes", "", "Run with `ferdata build NAME --out DIR [--VARIABLE VALUE ...]`.", ""]
    for name in recipe_names():
        raw = load_yaml(recipe_path(name)) or {}
        lines += [f"### {name}", "", _md_text(str(raw.get("description", "")).strip()), ""]
        variables = raw.get("variables") or {}
        if variables:
            shown = ", ".join(f"`--{k.replace('_', '-')}`" + (" (required)" if v is None else f" ({_fmt(v) or 'empty'})")
                              for k, v in variables.items())
            lines += [f"Variables: {shown}.", ""]
        for i, entry in enumerate(raw.get("steps") or [], 1):
            params = ", ".join(f"{k}: {_fmt(v)}" for k, v in entry.items() if k not in ("step", "when"))
            when = f" - only when `{entry['when']}` is set" if entry.get("when") else ""
            lines.append(f"{i}. `{entry.get('step')}`" + (f" ({params})" if params else "") + when)
        extras = [f"`{k}: {_fmt(raw[k])}`" for k in ("export", "report") if k in raw]
        if extras:
            lines += ["", "Also: " + ", ".join(extras) + "."]
        lines.append("")
    return lines


def render_commands_md() -> str:
    """The whole text of docs/commands.md."""
    commands = list(iter_commands())
    lines = [
        "# Command reference",
        "",
        f"<!-- Generated by `{REGENERATE}` from the commands themselves; do not edit by hand. -->",
        "",
        "Generated from the code: the `--help` of every command, the recipe steps and the packaged recipes. "
        f"`{REGENERATE}` rewrites this page; `tests/test_docs.py` fails when it is out of date. "
        "The task-oriented pages are listed in the [README](../README.md#commands).",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    for path, cmd in commands[1:]:
        title = "ferdata " + " ".join(path)
        lines.append(f"| [`{title}`](#{_anchor(title)}) | {_md_text(cmd.get_short_help_str(limit=200))} |")
    lines += ["", "Recipe steps: [below](#recipe-steps). Packaged recipes: [below](#packaged-recipes).", ""]
    for path, _cmd in commands:
        title = "ferdata " + " ".join(path) if path else "ferdata"
        lines += [f"## {title}", "", "```text", help_text(path).rstrip("\n"), "```", ""]
    lines += _steps_section() + [""] + _recipes_section()
    return "\n".join(lines).rstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------------
# Quoted defaults


def get_step_default(step: str, field: str) -> Any:
    """The default of ``field`` in the config of the registered step ``step``.

    Raises:
        UsageError: for an unknown step (from the registry) or field, naming the valid ones.
    """
    from ferdata.steps import get_step

    cls = get_step(step).config_cls
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if field not in fields:
        raise UsageError(f"step {step!r} has no parameter {field!r}; valid: {', '.join(fields)}")
    value = _field_default(fields[field])
    if value is dataclasses.MISSING:
        raise UsageError(f"step {step!r} parameter {field!r} has no default")
    return value


def _recipe_value(spec: str) -> Any:
    from ferdata.pipeline import recipe_path
    from ferdata.resources import load_yaml

    parts = spec.split(".")
    if len(parts) != 3:
        raise UsageError(f"bad recipe key {spec!r}; expected recipe:NAME.STEP.FIELD or recipe:NAME.variables.VAR")
    name, step, field = parts
    raw = load_yaml(recipe_path(name)) or {}
    if step == "variables":
        variables = raw.get("variables") or {}
        if field not in variables:
            raise UsageError(f"recipe {name!r} has no variable {field!r}; valid: {', '.join(variables)}")
        return variables[field]
    entries = [e for e in raw.get("steps") or [] if e.get("step") == step]
    if not entries:
        raise UsageError(f"recipe {name!r} has no step {step!r}; its steps: "
                         f"{', '.join(str(e.get('step')) for e in raw.get('steps') or [])}")
    if field not in entries[0]:
        # the recipe leaves it at the step's default
        return get_step_default(step, field)
    return entries[0][field]


def _cli_default(spec: str) -> Any:
    words = spec.split()
    options = [w for w in words if w.startswith("-")]
    path = [w for w in words if not w.startswith("-")]
    if len(options) != 1:
        raise UsageError(f"bad cli key {spec!r}; expected cli:COMMAND [SUBCOMMAND] --option")
    commands = {tuple(p): c for p, c in iter_commands()}
    cmd = commands.get(tuple(path))
    if cmd is None:
        raise UsageError(f"no command `ferdata {' '.join(path)}`")
    for param in cmd.params:
        if options[0] in getattr(param, "opts", ()) or options[0] in getattr(param, "secondary_opts", ()):
            return param.default
    raise UsageError(f"`ferdata {' '.join(path)}` has no option {options[0]}")


def resolve_default(key: str) -> Any:
    """The value the code gives ``key`` (see the module docstring for the key forms).

    Raises:
        UsageError: for a key that names nothing, saying what exists.
    """
    key = key.strip()
    if key.startswith("recipe:"):
        return _recipe_value(key[len("recipe:"):])
    if key.startswith("cli:"):
        return _cli_default(key[len("cli:"):])
    step, dot, field = key.partition(".")
    if not dot or not field:
        raise UsageError(f"bad default key {key!r}; expected STEP.FIELD, recipe:NAME.STEP.FIELD or cli:COMMAND --option")
    return get_step_default(step, field)


def _same(quoted: str, value: Any) -> bool:
    text = quoted.strip().strip("`").strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(text) == float(value)
        except ValueError:
            return False
    return text == _fmt(value)


@dataclass(frozen=True)
class StaleDefault:
    """A quoted default that differs from the code."""

    path: Path
    line: int
    key: str
    quoted: str
    actual: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.key} is quoted as {self.quoted!r}, the code says {self.actual!r}"


def find_spans(text: str) -> list[tuple[int, str, str]]:
    """Every quoted-default span of ``text`` as ``(line number, key, quoted value)``.

    Spans inside code (fenced blocks, inline code) are examples of the syntax and are skipped.
    """
    spans = []
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        for match in DEFAULT_SPAN.finditer(line):
            if line.count("`", 0, match.start()) % 2:
                continue  # inside an inline code span: an example of the syntax, not a quote
            spans.append((number, match["key"], match["value"]))
    return spans


def check_defaults(paths: Sequence[Path]) -> list[StaleDefault]:
    """The quoted-default spans in ``paths`` whose value is not the code's.

    Raises:
        UsageError: for a span whose key names nothing.
    """
    stale = []
    for path in paths:
        for number, key, quoted in find_spans(path.read_text(encoding="utf-8")):
            try:
                actual = resolve_default(key)
            except UsageError as e:
                raise UsageError(f"{path}:{number}: {e}") from e
            if not _same(quoted, actual):
                stale.append(StaleDefault(path, number, key, quoted.strip(), _fmt(actual)))
    return stale


def doc_files(root: Path) -> list[Path]:
    """README.md and every docs/*.md page under ``root``."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ferdata.docgen [--check] [--root DIR]``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m ferdata.docgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when docs are out of date")
    parser.add_argument("--root", type=Path, default=repo_root(), help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    root: Path = args.root
    if not (root / "docs").is_dir():
        print(f"Error: no docs/ under {root}; run from a source checkout or pass --root", file=sys.stderr)
        return 2
    status = 0
    page = root / COMMANDS_PAGE
    fresh = render_commands_md()
    current = page.read_text(encoding="utf-8") if page.exists() else None
    if current == fresh:
        print(f"{COMMANDS_PAGE}: up to date")
    elif args.check:
        print(f"{COMMANDS_PAGE}: out of date; run `{REGENERATE}`", file=sys.stderr)
        status = 1
    else:
        page.write_text(fresh, encoding="utf-8")
        print(f"{COMMANDS_PAGE}: written")
    try:
        stale = check_defaults(doc_files(root))
    except UsageError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    for item in stale:
        print(f"stale default: {item}", file=sys.stderr)
    if stale:
        print("fix the quoted values (and the prose around them) by hand", file=sys.stderr)
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
