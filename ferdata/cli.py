"""The ``ferdata`` command line: a thin layer that parses options and calls the library.

Errors: bad usage or bad input prints one line ``Error: ...`` and exits 2; a failed run exits 1;
no traceback unless ``FERDATA_VERBOSITY=debug``.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ferdata import __version__
from ferdata.errors import FerdataError

logger = logging.getLogger(__name__)
F = Callable[..., Any]


class FerdataGroup(click.Group):
    """A click group that turns every error into one line and the documented exit codes."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.exceptions.Abort:
            click.echo("Error: aborted", err=True)
            sys.exit(1)
        except click.UsageError as e:
            click.echo(f"Error: {e.format_message()}", err=True)
            sys.exit(2)
        except click.ClickException as e:
            click.echo(f"Error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except FerdataError as e:
            _debug_traceback()
            click.echo(f"Error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("Error: interrupted; run the same command again to resume where supported", err=True)
            sys.exit(130)
        except Exception as e:  # a bug or an environment failure: one line, traceback on request
            _debug_traceback()
            click.echo(f"Error: {type(e).__name__}: {e} (set FERDATA_VERBOSITY=debug for the traceback)", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _debug_traceback() -> None:
    if os.environ.get("FERDATA_VERBOSITY", "").lower() == "debug":
        import traceback

        traceback.print_exc()


# ---------------------------------------------------------------- shared options

def common_options(fn: F) -> F:
    """``--num-proc``, ``--seed``, ``--limit``, ``-q/--quiet`` and ``--overwrite``."""

    @click.option("--overwrite", is_flag=True, help="Replace the output directory if it exists.")
    @click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
    @click.option("--limit", type=click.IntRange(min=1), default=None, help="Process at most N items (for trials).")
    @click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
    @click.option("--num-proc", type=click.IntRange(min=1), default=1, show_default=True,
                  help="Worker processes for per-image work.")
    @functools.wraps(fn)
    def wrapper(*args: Any, quiet: bool, **kwargs: Any) -> Any:
        if quiet:
            from ferdata.progress import disable_progress_bars

            disable_progress_bars()
        return fn(*args, **kwargs)

    return wrapper


def out_option(fn: F) -> F:
    """``--out DIR`` (required)."""
    return click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
                        help="Output directory (must not exist unless --overwrite).")(fn)


def existing(kind: str = "path", *, dir_okay: bool = True, file_okay: bool = True) -> click.Path:
    """A click path type for an input that must exist."""
    return click.Path(exists=True, dir_okay=dir_okay, file_okay=file_okay, readable=True, path_type=Path)


def context(num_proc: int, seed: int, limit: int | None) -> Any:
    """The library's StepContext for the common options."""
    from ferdata.steps import StepContext

    return StepContext(num_proc=num_proc, seed=seed, limit=limit)


def run_step_command(name: str, params: dict[str, Any], *, inputs: list[Path], out: Path, num_proc: int, seed: int,
                     limit: int | None, overwrite: bool) -> dict[str, Any]:
    """Run one registered step from the command line and print its summary line."""
    from ferdata.steps import apply_step

    _, entry = apply_step(name, params, inputs=inputs, out=out, ctx=context(num_proc, seed, limit),
                          overwrite=overwrite)
    print_summary(entry, out)
    return entry


def print_summary(entry: dict[str, Any], out: Path) -> None:
    """One line per step: kept, rejected by reason, time, output."""
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(entry.get("rejected_by_reason", {}).items()))
    click.echo(f"{entry['step']}: kept {entry['kept']}, rejected {entry['rejected']}"
               f"{f' ({reasons})' if reasons else ''} in {entry['seconds']:.1f}s -> {out}")


# ---------------------------------------------------------------- the group

@click.group(cls=FerdataGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ferdata")
def cli() -> None:
    """ferdata: build facial-expression-recognition datasets worth training on, and train on them.

    Every command reads a dataset directory (or a source) and writes a new one; inputs are never
    modified. Run `ferdata COMMAND --help` for the options and an example.

    Example:

        ferdata import fer2013 fer2013.csv --out fer2013
    """


@cli.group("import")
def import_group() -> None:
    """Import a source into a dataset directory (fer2013, folder, affectnet, hf)."""


@import_group.command("fer2013")
@click.argument("csv", type=existing("CSV", dir_okay=False))
@out_option
@click.option("--classes", type=click.Choice(["7", "6", "3"]), default="7", show_default=True,
              help="Class grouping (paper 003).")
@common_options
def import_fer2013_cmd(csv: Path, out: Path, classes: str, **opts: Any) -> None:
    """Import the Kaggle fer2013.csv (emotion,pixels,Usage) with the official label codes.

    Training -> train, PublicTest -> validation, PrivateTest -> test. Malformed rows go to the
    rejects ledger with their line number.

    Example:

        ferdata import fer2013 fer2013.csv --out fer2013
    """
    run_step_command("import_fer2013", {"csv": str(csv), "classes": int(classes)}, inputs=[], out=out, **opts)


# ---------------------------------------------------------------- dataset building (foundation)

# ---------------------------------------------------------------- faces and quality: crop, filter

# ---------------------------------------------------------------- duplicates: dedupe

# ---------------------------------------------------------------- super-resolution: train-espcn, upscale

# ---------------------------------------------------------------- training: train, evaluate, export-tflite

# ---------------------------------------------------------------- crawl and review

# ---------------------------------------------------------------- refinement: refine


def main() -> None:
    """Entry point of ``python -m ferdata``."""
    cli(prog_name="ferdata")
