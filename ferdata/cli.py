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
    """A click group that turns every error into one line and the documented exit codes.

    It also keeps libraries quiet (TensorFlow's C++ start-up lines, Hugging Face's internal bars;
    ``FERDATA_VERBOSITY=debug`` shows them) and answers an unknown command with the closest ones.
    """

    #: subgroups (``import``, ``labels`` ...) get the same suggestions
    group_class = type

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        from ferdata.progress import quiet_libraries

        quiet_libraries()  # before any command can import TensorFlow
        set_quiet(False)  # -q applies to one invocation (tests run many in one process)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except (click.exceptions.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
            click.echo("Error: interrupted; run the same command again to resume (ferdata build resumes "
                       "after its last finished step)", err=True)
            sys.exit(130)
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
        except Exception as e:  # a bug or an environment failure: one line, traceback on request
            _debug_traceback()
            click.echo(f"Error: {type(e).__name__}: {e} (set FERDATA_VERBOSITY=debug for the traceback)", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        """Register ``cmd``, giving it ``-q/--quiet`` when it has none (every command takes -q)."""
        if not isinstance(cmd, click.Group) and not any("-q" in p.opts for p in cmd.params):
            cmd.params.append(click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, help=QUIET_HELP,
                                           callback=lambda _ctx, _param, value: set_quiet(bool(value))))
        super().add_command(cmd, name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            import difflib

            known = self.list_commands(ctx)
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f"did you mean {' or '.join(close)}?" if close else f"commands: {', '.join(known)}"
            raise click.UsageError(f"no such command {name!r}; {hint} (ferdata --help lists them)", ctx)
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        if ctx.parent is None:  # a command runs (--help and usage errors never get here)
            from ferdata.progress import library_bars_off

            library_bars_off()  # HF's own bars only inside a step's map (see ferdata.progress.hf_bars)
        return super().invoke(ctx)


def _debug_traceback() -> None:
    if os.environ.get("FERDATA_VERBOSITY", "").lower() == "debug":
        import traceback

        traceback.print_exc()


# ---------------------------------------------------------------- shared options

QUIET_HELP = "Quiet: no progress bars, step lines or tables; only warnings, errors and the result lines."


def set_quiet(quiet: bool) -> None:
    """Apply ``-q``: every ferdata and Hugging Face bar off, step lines and tables off."""
    from ferdata import progress

    progress.set_quiet(quiet)


def is_quiet() -> bool:
    """True under ``-q``."""
    from ferdata.progress import is_quiet as quiet

    return quiet()


def say(message: str = "", *, err: bool = False) -> None:
    """Echo a detail line (not the final summary); silent under ``-q``."""
    if not is_quiet():
        click.echo(message, err=err)


def quiet_option(fn: F) -> F:
    """``-q/--quiet`` alone, for commands without the other common options (export, push ...)."""

    @click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
    @functools.wraps(fn)
    def wrapper(*args: Any, quiet: bool, **kwargs: Any) -> Any:
        set_quiet(quiet)
        return fn(*args, **kwargs)

    return wrapper


def common_options(fn: F) -> F:
    """``--num-proc``, ``--seed``, ``--limit``, ``-q/--quiet`` and ``--overwrite``."""

    @click.option("--overwrite", is_flag=True, help="Replace the output directory if it exists.")
    @click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
    @click.option("--limit", type=click.IntRange(min=1), default=None, help="Process at most N items (for trials).")
    @click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
    @click.option("--num-proc", type=click.IntRange(min=1), default=1, show_default=True,
                  help="Worker processes for per-image work.")
    @functools.wraps(fn)
    def wrapper(*args: Any, quiet: bool, **kwargs: Any) -> Any:
        set_quiet(quiet)
        return fn(*args, **kwargs)

    return wrapper


def out_option(fn: F) -> F:
    """``--out DIR`` (required)."""
    return click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
                        help="Output directory (must not exist unless --overwrite).")(fn)


class ExistingPath(click.Path):
    """``click.Path(exists=True)`` whose "does not exist" error names what was expected (``kind``).

    A kind in capitals (``CSV``, ``SRC``, ``DIR``) is a metavar, not a description: click's own message
    (``Invalid value for 'CSV': File 'x' does not exist``) says more there and is kept.

    A file where a directory is expected says what to run instead: a dataset directory's
    (``DIR``, ``IN`` ...) names the importer (``import it first: ferdata import fer2013 X --out DIR``),
    a source folder's (``SRC``) the importer of that file, a run directory's (``RUN``) what makes one.
    """

    #: kinds that are not dataset directories: the importers' source folders, image folders, runs
    SOURCE_KINDS = ("SRC", "HR_DIR")

    def __init__(self, kind: str | None, *, dir_okay: bool, file_okay: bool) -> None:
        super().__init__(exists=True, dir_okay=dir_okay, file_okay=file_okay, readable=True, path_type=Path)
        self.kind = kind

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        described = bool(self.kind and not self.kind.isupper())
        if described and isinstance(value, (str, os.PathLike)) and not os.path.exists(value):
            self.fail(f"{self.kind} {os.fsdecode(value)!r} does not exist.", param, ctx)
        if not self.file_okay and isinstance(value, (str, os.PathLike)) and os.path.isfile(value):
            from ferdata.dataset import file_not_dataset_message

            path = os.fsdecode(value)
            if self.kind == "RUN":
                self.fail(f"{path} is a file, not a run directory (the --out of ferdata train or refine)", param, ctx)
            expected = "a source folder" if self.kind in self.SOURCE_KINDS else "a dataset directory"
            self.fail(file_not_dataset_message(path, expected=expected), param, ctx)
        return super().convert(value, param, ctx)


def existing(kind: str | None = None, *, dir_okay: bool = True, file_okay: bool = True) -> click.Path:
    """A click path type for an input that must exist; ``kind`` names it in the error (``"label map"``).

    Example:
        >>> existing("label map", dir_okay=False).convert("x.yaml", None, None)  # doctest: +SKIP
        click.exceptions.BadParameter: label map 'x.yaml' does not exist.
    """
    return ExistingPath(kind, dir_okay=dir_okay, file_okay=file_okay)


def context(num_proc: int, seed: int, limit: int | None) -> Any:
    """The library's StepContext for the common options."""
    from ferdata.steps import StepContext

    return StepContext(num_proc=num_proc, seed=seed, limit=limit)


#: The registered step each command runs alone (recipes name the step, the command line the command).
COMMAND_STEPS: dict[str, str] = {
    "import fer2013": "import_fer2013", "import folder": "import_folder", "import ferplus": "import_ferplus",
    "import affectnet": "import_affectnet", "import hf": "import_hf", "import hub": "import_hub", "crawl": "crawl",
    "crop": "crop",
    "align": "align", "normalize": "normalize", "clahe": "clahe", "filter": "quality", "drop-flagged": "drop_flagged",
    "dedupe": "dedupe", "upscale": "upscale", "apply-review": "review_exclusions", "balance": "balance",
    "split": "split",
}

#: ``ferdata build --help``'s epilog: the mapping, step first (as recipes name them).
COMMAND_STEPS_HELP = ("Recipe steps and the commands that run them alone: "
                      + ", ".join(f"{step} ({cmd})" if cmd != step else step for cmd, step in COMMAND_STEPS.items())
                      + "; classes is the --classes option of the import commands.")


def run_step_command(command: str, params: dict[str, Any], *, inputs: list[Path], out: Path, num_proc: int, seed: int,
                     limit: int | None, overwrite: bool) -> dict[str, Any]:
    """Run the step of ``command`` (see :data:`COMMAND_STEPS`) and print its summary line."""
    from ferdata.steps import apply_step

    _, entry = apply_step(COMMAND_STEPS[command], params, inputs=inputs, out=out, ctx=context(num_proc, seed, limit),
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


@cli.group("import", short_help="Import a source into a dataset directory.")
def import_group() -> None:
    """Import a source into a dataset directory (fer2013, folder, affectnet, hf)."""


@import_group.command("fer2013", short_help="Import the Kaggle fer2013.csv, optionally with FER+ votes.")
@click.argument("csv", type=existing("CSV", dir_okay=False))
@out_option
@click.option("--classes", type=click.Choice(["8", "7", "6", "3"]), default="7", show_default=True,
              help="Class grouping (paper 003); 8 (contempt) only with FER+ labels.")
@click.option("--ferplus", type=existing("FER+ votes file", dir_okay=False), default=None,
              help="FER+ fer2013new.csv aligned row by row with CSV: adds ferplus_votes and label_fer2013.")
@click.option("--label-source", type=click.Choice(["ferplus", "fer2013"]), default="ferplus", show_default=True,
              help="With --ferplus: which labels become `label`.")
@click.option("--ferplus-mode", type=click.Choice(["majority", "plurality", "probability"]), default="majority",
              show_default=True, help="With --ferplus: the FER+ rule turning 10 votes into a label.")
@common_options
def import_fer2013_cmd(csv: Path, out: Path, classes: str, ferplus: Path | None, label_source: str, ferplus_mode: str,
                       **opts: Any) -> None:
    """Import the Kaggle fer2013.csv (emotion,pixels,Usage) with the official label codes.

    Training -> train, PublicTest -> validation, PrivateTest -> test. Malformed rows go to the
    rejects ledger with their line number. With --ferplus, FER+'s 10 annotator votes are added
    (ferplus_votes), the FER2013 label is kept as label_fer2013, and rows FER+ cannot label
    (no majority, unknown, not a face) go to the ledger with the reason.

    Example:

        ferdata import fer2013 fer2013.csv --ferplus fer2013new.csv --out fer2013-ferplus
    """
    params: dict[str, Any] = {"csv": str(csv), "classes": int(classes)}
    if ferplus is not None:
        params.update(ferplus=str(ferplus), label_source=label_source, ferplus_mode=ferplus_mode)
    run_step_command("import fer2013", params, inputs=[], out=out, **opts)


@import_group.command("folder", short_help="Import class-per-folder images.")
@click.argument("src", type=existing("SRC", file_okay=False))
@out_option
@click.option("--label-map", type=existing("label map", dir_okay=False), default=None,
              help="YAML mapping folder names to classes (default: the synonyms in manifests/labels.yaml).")
@click.option("--name", default=None, help="Dataset name recorded in the source column (folder:NAME).")
@click.option("--classes", type=click.Choice(["8", "7", "6", "3"]), default="7", show_default=True,
              help="Class grouping (paper 003).")
@common_options
def import_folder_cmd(src: Path, out: Path, label_map: Path | None, name: str | None, classes: str, **opts: Any) -> None:
    """Import class-per-folder images: SRC/<class>/* or SRC/<split>/<class>/*.

    Folder names map to classes through synonyms (anger -> angry, happiness -> happy ...); an
    unknown folder name is an error unless --label-map is given. Unusable files go to the ledger.

    Example:

        ferdata import folder fer2013-images/ --out fer2013 --num-proc 2
    """
    run_step_command("import folder", {"src": str(src), "label_map": str(label_map) if label_map else None,
                                       "name": name, "classes": int(classes)}, inputs=[], out=out, **opts)


@import_group.command("ferplus", short_help="Import FER+'s folder layout (label.csv + PNGs).")
@click.argument("src", type=existing("SRC", file_okay=False))
@out_option
@click.option("--classes", type=click.Choice(["8", "7", "6", "3"]), default="7", show_default=True,
              help="Class grouping (paper 003); contempt is a class only with 8.")
@click.option("--ferplus-mode", type=click.Choice(["majority", "plurality", "probability"]), default="majority",
              show_default=True, help="The FER+ rule turning 10 votes into a label.")
@common_options
def import_ferplus_cmd(src: Path, out: Path, classes: str, ferplus_mode: str, **opts: Any) -> None:
    """Import FER+'s folder layout: SRC/FER2013Train|FER2013Valid|FER2013Test with label.csv + PNGs.

    label.csv rows are `name,"(x, y, w, h)",<10 votes>`; the label follows the FER+ rule and
    ferplus_votes keeps the votes. Rows FER+ cannot label go to the ledger with the reason.

    Example:

        ferdata import ferplus FERPlus/data --out ferplus
    """
    run_step_command("import ferplus", {"src": str(src), "classes": int(classes), "ferplus_mode": ferplus_mode},
                     inputs=[], out=out, **opts)


@import_group.command("affectnet", short_help="Import AffectNet images and annotations.")
@click.argument("src", type=existing("SRC", file_okay=False))
@out_option
@click.option("--classes", type=click.Choice(["8", "7", "6", "3"]), default="8", show_default=True,
              help="8 keeps contempt; 7 drops it (paper 000).")
@common_options
def import_affectnet_cmd(src: Path, out: Path, classes: str, **opts: Any) -> None:
    """Import AffectNet: images/ + annotations/<id>_exp.npy (or train_set/ and val_set/ of them).

    Example:

        ferdata import affectnet AffectNet/ --out affectnet --classes 7
    """
    run_step_command("import affectnet", {"src": str(src), "classes": int(classes)}, inputs=[], out=out, **opts)


@import_group.command("hf", short_help="Import a saved Hugging Face dataset or an exported Hub folder.")
@click.argument("src", type=existing("SRC", file_okay=False))
@out_option
@click.option("--image-column", default="image", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--codes", default=None, help="Label map for integer labels without names (fer2013, affectnet, rafdb ...).")
@click.option("--classes", type=click.Choice(["8", "7", "6", "3"]), default="7", show_default=True)
@common_options
def import_hf_cmd(src: Path, out: Path, image_column: str, label_column: str, codes: str | None, classes: str,
                  **opts: Any) -> None:
    """Import a Hugging Face dataset saved on disk (save_to_disk) or an exported Hub folder.

    Example:

        ferdata import hf my-saved-dataset/ --out mine --codes rafdb
    """
    run_step_command("import hf", {"src": str(src), "image_column": image_column, "label_column": label_column,
                                   "codes": codes, "classes": int(classes)}, inputs=[], out=out, **opts)


@import_group.command("hub", short_help="Import a published dataset (Hub repo or Hub-layout folder) back.")
@click.argument("repo", metavar="REPO_ID[@REVISION]|FOLDER")
@out_option
@click.option("--classes", type=click.Choice(["8", "7", "6", "3"]), default=None,
              help="Regroup the classes (default: as published).")
@click.option("--image-column", default="image", show_default=True, help="For a dataset ferdata did not publish.")
@click.option("--label-column", default="label", show_default=True, help="For a dataset ferdata did not publish.")
@click.option("--codes", default=None, help="For integer labels without names (fer2013, affectnet, rafdb ...).")
@common_options
def import_hub_cmd(repo: str, out: Path, classes: str | None, image_column: str, label_column: str,
                   codes: str | None, **opts: Any) -> None:
    """Import a published dataset from the Hub (user/name, @branch, @tag, @refs/pr/N or @commit), or a
    local folder in the Hub layout, into a dataset directory.

    A dataset ferdata published comes back as it was: labels, ids, root_id/parent_id and the other
    columns (each id checked against its pixels), and the card's provenance in ferdata.json
    (upstream). With HF_HUB_OFFLINE=1 it reads the local Hub cache. HF_ENDPOINT and HF_TOKEN are
    honoured. A missing repository or revision is an error (exit 2).

    Example:

        ferdata import hub me/fer2013-224@v1 --out fer2013-224
    """
    run_step_command("import hub", {"repo": repo, "classes": int(classes) if classes else None,
                                    "image_column": image_column, "label_column": label_column, "codes": codes},
                     inputs=[], out=out, **opts)


# ---------------------------------------------------------------- dataset building (foundation)

@cli.command("balance", short_help="Rebalance classes and store class weights.")
@click.argument("src", type=existing("IN", file_okay=False))
@out_option
@click.option("--strategy", type=click.Choice(["undersample", "oversample", "target", "keep"]), default="undersample",
              show_default=True, help="undersample to the smallest class, oversample to the largest, sample "
              "to a per-class target, or keep every row (only --supplement adds rows).")
@click.option("--per-class", default=None, metavar="N|median",
              help="Rows per class (required by target); median: each split's median class count.")
@click.option("--splits", default=None, help="Comma-separated splits to balance (default: train, else all).")
@click.option("--supplement", type=existing("supplement", file_okay=False), default=None,
              help="Dataset directory to take extra rows from, its train split only (paper 004: disgust from "
              "another set); copies of this dataset's photos go to the ledger as contamination.")
@click.option("--supplement-classes", default=None, help="Comma-separated classes to supplement, or all (the default).")
@common_options
def balance_cmd(src: Path, out: Path, strategy: str, per_class: str | None, splits: str | None,
                supplement: Path | None, supplement_classes: str | None, **opts: Any) -> None:
    """Rebalance classes and store class weights (simple, conservative, inverse) in ferdata.json.

    Example:

        ferdata balance btfer-raw --out btfer --strategy target --per-class 300 --seed 0

        ferdata balance fer2013 --out fer2013-plus --strategy keep --per-class median \
            --supplement raf-db --supplement-classes disgust
    """
    run_step_command("balance", {"strategy": strategy, "per_class": per_class, "splits": splits,
                                 "supplement": str(supplement) if supplement else None,
                                 "supplement_classes": supplement_classes}, inputs=[src], out=out, **opts)


@cli.command("split", short_help="Make a stratified, seeded, group-aware split.")
@click.argument("src", type=existing("IN", file_okay=False))
@out_option
@click.option("--ratios", default="0.8,0.1,0.1", show_default=True, help="Comma-separated shares summing to 1.")
@click.option("--names", default=None, help="Split names, one per ratio (default train,validation[,test]).")
@click.option("--resplit", is_flag=True, help="Pool every split and split anew (default: keep existing splits).")
@click.option("--group-column", default="group", show_default=True, help="Rows sharing this value stay together.")
@click.option("--group", "group_kind", type=click.Choice(["duplicate", "similar"]), default=None,
              help="similar = keep dedupe's similar_group together (look-alikes linked to one anchor row: "
                   "another photo of the same person, or a close stranger; includes the duplicate groups); "
                   "duplicate = the group column.")
@click.option("--max-group-share", type=float, default=0.05, show_default=True,
              help="Refuse when one group holds more than this share of the rows (groups of 10 rows or fewer "
                   "always pass); the error names the group and its size.")
@common_options
def split_cmd(src: Path, out: Path, ratios: str, names: str | None, resplit: bool, group_column: str,
              group_kind: str | None, max_group_share: float, **opts: Any) -> None:
    """Stratified, seeded, group-aware split (duplicate clusters never cross splits).

    Example:

        ferdata split nhfi --out nhfi-split --ratios 0.8,0.2

        ferdata split fer2013-dedup --out fer2013-split --resplit --group similar
    """
    if group_kind == "similar":
        from ferdata.dedupe import SIMILAR_COLUMN

        group_column = SIMILAR_COLUMN
    run_step_command("split", {"ratios": ratios, "names": names, "resplit": resplit, "group_column": group_column,
                               "max_group_share": max_group_share}, inputs=[src], out=out, **opts)


@cli.command("build", short_help="Run a whole recipe (a packaged name or a YAML path).", epilog=COMMAND_STEPS_HELP,
             context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("recipe")
@out_option
@click.option("--strict", is_flag=True, help="Fail (write nothing) when a class falls short of its target.")
@click.option("--engine", default="local", show_default=True, metavar="local|ray",
              help="Run per-row work here (local) or on a Ray cluster (ray; pip install 'ferdata[ray]'). Any other "
                   "value sets the recipe's own engine variable (btfer's search engine: --engine bing).")
@click.option("--ray-address", default=None, metavar="auto|ray://HOST:PORT",
              help="With --engine ray: the cluster to join (default: start Ray on this machine for the build).")
@common_options
@click.pass_context
def build_cmd(ctx: click.Context, recipe: str, out: Path, strict: bool, engine: str, ray_address: str | None,
              num_proc: int, seed: int, limit: int | None, overwrite: bool) -> None:
    """Run a recipe (pipelines/NAME.yaml or a path); recipe variables are options: --source X.

    A killed build run again with the same command resumes after its last finished step.
    Packaged recipes live in pipelines/ (an unknown name lists them).

    Example:

        ferdata build fer2013-improved --source fer2013.csv --out fer2013-224

        ferdata build fer2013-improved --source fer2013.csv --out fer2013-224 --engine ray --ray-address auto
    """
    from ferdata.engines import get_engine
    from ferdata.errors import RecipeError
    from ferdata.pipeline import build, load_recipe

    variables = parse_variables(ctx.args)
    if engine not in _RUN_ENGINES:  # a recipe variable of the same name (btfer: bing, loopback ...)
        variables["engine"] = engine
        engine = "local"
    try:
        plan = load_recipe(recipe, variables)
    except RecipeError as e:
        if "no variable engine" in str(e):
            raise click.BadParameter(f"{variables['engine']!r} is not local or ray, and recipe {recipe!r} has no "
                                     "engine variable to take it", param_hint="--engine") from e
        raise
    with get_engine(engine, address=ray_address) as runner:
        manifest = build(plan, out, ctx=context(num_proc, seed, limit), overwrite=overwrite, strict=strict,
                         engine=runner)
    from ferdata.progress import summary_table

    total = sum(e["seconds"] for e in manifest["steps"]) or 1.0
    say(summary_table(manifest["steps"]))
    shares = ", ".join(f"{e['step']} {100 * e['seconds'] / total:.0f}%" for e in manifest["steps"])
    click.echo(f"built {plan.name}: {sum(manifest['splits'].values())} rows {manifest['splits']} in "
               f"{manifest.get('build_seconds', total):.1f}s (time per step: {shares}) -> {out}")
    for name, report in manifest.get("shortfall", {}).items():
        losses = ", ".join(f"{step} -{n}" for step, n in report["lost_by_step"].items()) or "none after the source"
        click.echo(f"warning: {name} is short of its target by {report['missing']} ({report['source_step']} made "
                   f"{report['made']}; lost by step: {losses})", err=True)


_RUN_ENGINES = ("local", "ray")


def parse_variables(args: list[str]) -> dict[str, str]:
    """``--name value`` / ``--name=value`` pairs after the recipe name."""
    variables: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) < 3:
            raise click.UsageError(f"unexpected argument {arg!r}; recipe variables are given as --name value")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise click.UsageError(f"option {arg} needs a value")
            key, value = arg[2:], args[i + 1]
            i += 2
        variables[key.replace("-", "_")] = _yaml_scalar(value)
    return variables


def _yaml_scalar(value: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


@cli.command("export", short_help="Write the Hub layout (parquet + card) or class folders.")
@click.argument("src", type=existing("DIR", file_okay=False))
@out_option
@click.option("--format", "fmt", type=click.Choice(["hub", "imagefolder"]), default="hub", show_default=True)
@click.option("--license", "license_", default="other", show_default=True, help="License written to the card.")
@click.option("--full-paths", is_flag=True, help="Keep local paths in the card's parameters (default: file names).")
@click.option("--overwrite", is_flag=True, help="Replace the output directory if it exists.")
@quiet_option
def export_cmd(src: Path, out: Path, fmt: str, license_: str, full_paths: bool, overwrite: bool) -> None:
    """Write the Hub layout (parquet + dataset card) or class folders (--format imagefolder).

    `datasets.load_dataset(OUT)` loads the Hub layout back to the same rows; the card's load line
    names OUT, and its provenance lists the parameters each step applied (docs/hub.md).

    Example:

        ferdata export fer2013 --out fer2013-hub
    """
    from ferdata.hub import export

    options = {"license": license_, "full_paths": full_paths} if fmt == "hub" else {}
    path = export(src, out, format=fmt, overwrite=overwrite, **options)
    click.echo(f"exported {src} as {fmt} -> {path}")


@cli.command("push", short_help="Publish a dataset directory to the Hugging Face Hub in one commit.")
@click.argument("src", type=existing("DIR", file_okay=False))
@click.argument("repo_id")
@click.option("--revision", default=None, metavar="BRANCH",
              help="Branch to write (created from main if missing), or refs/pr/N to add to an open pull request.")
@click.option("--create-pr", is_flag=True, help="Open a pull request against the branch instead of writing it.")
@click.option("--tag", default=None, help="Tag the new commit (e.g. v1.0); an existing tag is an error, before any "
                                          "commit.")
@click.option("--private", is_flag=True, help="Create the repository as private.")
@click.option("--token", default=None, help="Hub token (default: the HF_TOKEN environment variable). Never printed.")
@click.option("--license", "license_", default=None,
              help="License written to the card (default: the one already on the Hub, else 'other').")
@click.option("--full-paths", is_flag=True, help="Keep local paths in the card's parameters (default: file names).")
@quiet_option
def push_cmd(src: Path, repo_id: str, revision: str | None, create_pr: bool, tag: str | None, private: bool,
             token: str | None, license_: str | None, full_paths: bool) -> None:
    """Publish a dataset directory to a Hub dataset repository, in one commit.

    The commit adds the new export (README.md, data/*.parquet) and deletes every file under data/
    that the new export lacks, so the repository never mixes old and new shards. Files outside
    data/ are kept. The card: ferdata's fields (license, task_categories, tags, size_categories,
    pretty_name, configs, dataset_info, ferdata) and its text between the ferdata markers are
    rewritten; other fields and text a user added on the Hub are kept. HF_ENDPOINT is honoured.

    Example:

        HF_TOKEN=hf_... ferdata push fer2013-224 me/fer2013-224 --tag v1

        HF_TOKEN=hf_... ferdata push fer2013-224-v2 me/fer2013-224 --create-pr
    """
    from ferdata.hub import push

    result = push(src, repo_id, token=token, private=private, revision=revision, create_pr=create_pr, tag=tag,
                  license=license_, full_paths=full_paths)
    where = f"a pull request {result.pr_revision} against {result.revision}" if result.pr_revision else result.revision
    created = " (branch created)" if result.branch_created else ""
    if not result.committed:
        click.echo(f"nothing to push: {repo_id}@{result.revision}{created} already holds this export (commit "
                   f"{result.commit[:12]}); no commit made{', no pull request opened' if create_pr else ''}")
    else:
        click.echo(f"pushed {src} to {repo_id}, {where}{created}: commit {result.commit[:12]}, "
                   f"{len(result.added)} files written ({len(result.unchanged)} unchanged), "
                   f"{len(result.deleted)} stale deleted")
    if result.deleted:
        say(f"  deleted (not in the new export): {', '.join(result.deleted)}")
    if result.card is not None and result.committed:
        kept = ", ".join(result.card.kept) or "none"
        body = {"markers": "rewritten between the ferdata markers, the rest kept", "new": "new",
                "replaced": "replaced (the card on the Hub had no ferdata markers)"}[result.card.body]
        click.echo(f"card: rewrote {', '.join(result.card.rewritten)}; kept fields: {kept}; text {body}")
    if result.pr_url:
        click.echo(f"pull request: {result.pr_url}")
    if result.tag:
        click.echo(f"tagged {result.tag} -> {result.commit[:12]}")


@cli.command("demo", short_help="Run the offline end-to-end demo (the btfer recipe).")
@out_option
@click.option("--per-class", type=click.IntRange(min=1), default=3, show_default=True,
              help="Faces per class in the demo's test split (the btfer recipe's per_class).")
@click.option("--photos", type=click.IntRange(min=1), default=10, show_default=True,
              help="Distinct face photos the local engine serves per class.")
@click.option("--no-report", is_flag=True, help="Skip the HTML report.")
@common_options
def demo_cmd(out: Path, per_class: int, photos: int, no_report: bool, num_proc: int, seed: int, limit: int | None,
             overwrite: bool) -> None:
    """Offline end-to-end demo: the real btfer recipe against a local, hostile search engine.

    Starts ferdata's image-search engine on 127.0.0.1 (photos made from scikit-image's
    public-domain samples, plus 404, 500, redirect-loop, HTML-as-JPEG, oversized and corrupt
    answers), runs crawl -> dedupe -> MTCNN crop -> quality -> review exclusions -> split ->
    balance -> Hub export, writes the review contact sheets (and the HTML report when available),
    then prints where everything is and the commands to run on real data. About a minute on
    2 cores; nothing leaves the machine.

    Example:

        ferdata demo --out ferdata-demo
    """
    from ferdata.demo import NEXT_STEPS, run_demo
    from ferdata.progress import summary_table

    if limit is not None:
        raise click.BadParameter("the demo is already tiny; use --per-class/--photos instead", param_hint="--limit")
    result = run_demo(out, per_class=per_class, photos=photos, overwrite=overwrite, num_proc=num_proc, seed=seed,
                      report=not no_report)
    for note in result.notes:
        click.echo(f"warning: {note}", err=True)
    say(summary_table(result.manifest["steps"]))
    say("")
    places = [(f"{out}/", f"the dataset directory: datasets.load_from_disk(\"{out}\"), or ferdata info {out}"),
              (f"{out}/hub/", f"parquet + a dataset card that says it is a demo (ferdata push {out} USER/NAME)"),
              (f"{out}/rejects.parquet", "every removed image with its step and reason")]
    if result.review_dir is not None:
        places.append((f"{result.review_dir}/", "contact sheets (index.html) and review.csv to mark rejects"))
    if result.report is not None:
        places.append((str(result.report), "the HTML report"))
    width = max(len(p) for p, _ in places)
    say("Output (a demo: one person's face, labels from the search queries; not for training):")
    for place, what in places:
        say(f"  {place:<{width}}  {what}")
    say("")
    say(NEXT_STEPS)
    say("")
    click.echo(result.summary_line())


@cli.command("info", short_help="Show what a dataset directory holds.")
@click.argument("src", metavar="DIR", type=existing("DIR", file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON (for scripts).")
@quiet_option
def info_cmd(src: Path, as_json: bool) -> None:
    """What a dataset directory holds: rows per split and class, steps, reject reasons, columns, size.

    Reads only metadata, the label column and the ledger (no image is decoded). -q prints the
    first line only.

    Example:

        ferdata info ferdata-demo

        ferdata info fer2013-224 --json
    """
    from ferdata.info import dataset_info, format_info

    info = dataset_info(src)
    if as_json:
        import json

        click.echo(json.dumps(info, indent=2, default=str))
        return
    text = format_info(info)
    click.echo(text.splitlines()[0] if is_quiet() else text)


# ---------------------------------------------------------------- faces and quality: crop, filter


def _face_options(fn: F) -> F:
    """Detector options shared by crop, align and normalize."""
    fn = click.option("--detect-max-side", type=click.IntRange(min=0), default=960, show_default=True,
                      help="Detect on a copy whose longest side is at most this (0: full resolution).")(fn)
    fn = click.option("--pad", type=click.Choice(["black", "edge"]), default="black", show_default=True,
                      help="Fill where the frame leaves the image.")(fn)
    fn = click.option("--min-face-size", type=click.IntRange(min=0), default=20, show_default=True,
                      help="Smallest face box side kept, in source pixels.")(fn)
    return fn


def _clahe_options(fn: F) -> F:
    fn = click.option("--tile-size", type=int, default=8, show_default=True, help="CLAHE tiles per side.")(fn)
    fn = click.option("--clip-limit", type=float, default=2.0, show_default=True, help="CLAHE clip limit.")(fn)
    return fn


def _echo_face_rate(entry: dict[str, Any]) -> None:
    info = entry.get("info", {})
    if "no_face_rate" in info:
        click.echo(f"no usable face in {info['no_face']} of {info['input_rows']} images "
                   f"({100 * info['no_face_rate']:.1f}%)")


@cli.command("crop", short_help="Detect faces with MTCNN and crop them (BTFER framing).")
@click.argument("input_dir", metavar="IN", type=existing(file_okay=False))
@out_option
@click.option("--size", type=int, default=256, show_default=True, help="Output side in pixels.")
@click.option("--margin", type=int, default=20, show_default=True,
              help="Output pixels of context around the face box (BTFER framing).")
@click.option("--faces", type=click.Choice(["largest", "all"]), default="largest", show_default=True,
              help="Keep the largest face, or one row per face (face_index).")
@click.option("--min-confidence", type=float, default=0.95, show_default=True, help="MTCNN confidence needed.")
@_face_options
@click.option("--align", is_flag=True, help="Rotate so the eye line is horizontal (paper 003).")
@click.option("--normalize", is_flag=True,
              help="Crop around the eyes: 1.7x inter-eye distance each side, 1.3x above, 3.2x below (paper 003).")
@click.option("--clahe", is_flag=True, help="Apply CLAHE to the crops.")
@_clahe_options
@common_options
def crop_cmd(input_dir: Path, out: Path, num_proc: int, seed: int, limit: int | None, overwrite: bool,
             **params: Any) -> None:
    """Detect faces with MTCNN and crop them (BTFER framing: square, --margin px of context).

    Images without a usable face go to the rejects ledger (no_face, low_confidence,
    face_too_small). Skip this on tight face crops such as FER2013's 48x48 images: MTCNN needs
    context, and the command reports its no-face rate.

    Example:

        ferdata crop web-photos --out web-faces --size 256 --margin 20 --faces all
    """
    entry = run_step_command("crop", params, inputs=[input_dir], out=out, num_proc=num_proc, seed=seed,
                             limit=limit, overwrite=overwrite)
    _echo_face_rate(entry)


@cli.command("align", short_help="Rotate each face so the eye line is horizontal.")
@click.argument("input_dir", metavar="IN", type=existing(file_okay=False))
@out_option
@click.option("--min-confidence", type=float, default=0.9, show_default=True, help="MTCNN confidence needed.")
@_face_options
@common_options
def align_cmd(input_dir: Path, out: Path, num_proc: int, seed: int, limit: int | None, overwrite: bool,
              **params: Any) -> None:
    """Rotate each image about the eye midpoint so the eye line is horizontal (paper 003).

    Example:

        ferdata align faces --out faces-aligned
    """
    entry = run_step_command("align", params, inputs=[input_dir], out=out, num_proc=num_proc, seed=seed,
                             limit=limit, overwrite=overwrite)
    _echo_face_rate(entry)


@cli.command("normalize", short_help="Crop around the eyes (paper 003).")
@click.argument("input_dir", metavar="IN", type=existing(file_okay=False))
@out_option
@click.option("--size", type=int, default=256, show_default=True, help="Output height in pixels.")
@click.option("--align/--no-align", default=True, show_default=True, help="Rotate the eye line horizontal too.")
@click.option("--min-confidence", type=float, default=0.9, show_default=True, help="MTCNN confidence needed.")
@_face_options
@common_options
def normalize_cmd(input_dir: Path, out: Path, num_proc: int, seed: int, limit: int | None, overwrite: bool,
                  **params: Any) -> None:
    """Crop around the eyes: 1.7x inter-eye distance each side, 1.3x above, 3.2x below (paper 003).

    Example:

        ferdata normalize faces --out faces-norm --size 256
    """
    entry = run_step_command("normalize", params, inputs=[input_dir], out=out, num_proc=num_proc, seed=seed,
                             limit=limit, overwrite=overwrite)
    _echo_face_rate(entry)


@cli.command("clahe", short_help="Equalise contrast with CLAHE (paper 003).")
@click.argument("input_dir", metavar="IN", type=existing(file_okay=False))
@out_option
@_clahe_options
@common_options
def clahe_cmd(input_dir: Path, out: Path, num_proc: int, seed: int, limit: int | None, overwrite: bool,
              **params: Any) -> None:
    """Contrast-limited adaptive histogram equalisation of every image (paper 003).

    Example:

        ferdata clahe fer2013 --out fer2013-clahe --clip-limit 2.0 --tile-size 8
    """
    run_step_command("clahe", params, inputs=[input_dir], out=out, num_proc=num_proc, seed=seed, limit=limit,
                     overwrite=overwrite)


@cli.command("filter", short_help="Score image quality and drop the checks named in --drop.")
@click.argument("input_dir", metavar="IN", type=existing(file_okay=False))
@out_option
@click.option("--drop", default=None, metavar="CHECKS",
              help="Comma list of checks whose flagged rows go to the rejects ledger, or 'all': "
                   "dark, light, blurry, low_information, too_small, odd_aspect.")
@click.option("--dark-threshold", type=float, default=None, help="Flag when 99th pct brightness/255 is below [0.2].")
@click.option("--light-threshold", type=float, default=None, help="Flag when 5th pct brightness/255 is above [0.7].")
@click.option("--blurry-threshold", type=float, default=None, help="Flag when the sharpness score is below [0.2].")
@click.option("--low-information-threshold", type=float, default=None,
              help="Flag when the histogram entropy (bits) is below [4.5].")
@click.option("--min-side", type=int, default=None, help="Flag when the shorter side is below [48] px.")
@click.option("--max-aspect", type=float, default=None, help="Flag when longer/shorter side is above [1.5].")
@common_options
def filter_cmd(input_dir: Path, out: Path, num_proc: int, seed: int, limit: int | None, overwrite: bool,
               **params: Any) -> None:
    """Score image quality (<check>_score, is_<check> columns); drop the checks named in --drop.

    Example:

        ferdata filter fer2013 --out fer2013-clean --drop low_information,dark,light
    """
    entry = run_step_command("filter", params, inputs=[input_dir], out=out, num_proc=num_proc, seed=seed,
                             limit=limit, overwrite=overwrite)
    flagged = entry.get("info", {}).get("flagged", {})
    if flagged:
        click.echo("flagged: " + ", ".join(f"{k} {v}" for k, v in flagged.items()))


@cli.command("drop-flagged", short_help="Move rows flagged by the named checks to the ledger.")
@click.argument("input_dir", metavar="IN", type=existing(file_okay=False))
@out_option
@click.option("--checks", required=True, metavar="CHECKS",
              help="Comma list of checks (is_<check> columns, e.g. dark,blurry,duplicate) or 'all'.")
@common_options
def drop_flagged_cmd(input_dir: Path, out: Path, num_proc: int, seed: int, limit: int | None, overwrite: bool,
                     checks: str) -> None:
    """Move rows flagged by the named checks to the rejects ledger, with their scores.

    Example:

        ferdata drop-flagged fer2013-scored --out fer2013-clean --checks dark,low_information
    """
    run_step_command("drop-flagged", {"checks": checks}, inputs=[input_dir], out=out, num_proc=num_proc, seed=seed,
                     limit=limit, overwrite=overwrite)


# ---------------------------------------------------------------- duplicates: dedupe

@cli.command("dedupe", short_help="Remove exact and near duplicates; report split leakage.")
@click.argument("input_dir", metavar="IN", type=existing(file_okay=False))
@out_option
@click.option("--method", type=click.Choice(["phash", "dhash", "whash", "ahash"]), default="phash",
              show_default=True, help="Perceptual hash (64 bits, imagehash); stored as a column and reused.")
@click.option("--threshold", type=int, default=None,
              help="Candidate radius: largest Hamming distance (0..64) between a near duplicate and its survivor "
                   "[18]; 0 = identical hashes only.")
@click.option("--verify", type=click.Choice(["xcorr", "none"]), default=None,
              help="Verifier of candidate pairs [xcorr: registered detail correlation]; none = radius only.")
@click.option("--min-score", type=float, default=None,
              help="Smallest verdict score (detail correlation minus photometric residual, -1..1) of a near "
                   "duplicate, i.e. the same photograph, at a hash distance of 10 bits or less [0.44].")
@click.option("--score-rise", type=float, default=None,
              help="Added to --min-score per hash bit beyond 10 (0..0.1) [0.01]: the threshold rises with "
                   "the distance, where look-alike pairs multiply.")
@click.option("--similar-score", type=float, default=None,
              help="Smallest verdict score (-1..1) linking a kept row to its similar_group's anchor "
                   "(look-alikes; never chained) [0.35].")
@click.option("--keep", default="test,validation,train", show_default=True, metavar="first|largest|SPLITS",
              help="Survivor of each group: first row, largest image, or a split preference list.")
@click.option("--on-conflict", type=click.Choice(["keep", "drop", "majority"]), default="keep", show_default=True,
              help="Groups with different labels: keep the survivor's label, drop the group, or majority label "
                   "(never for a test/validation survivor).")
@click.option("--report-only", is_flag=True,
              help="Annotate (is_duplicate, duplicate_of, ...) and write the groups report; remove nothing.")
@click.option("--report", "report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the groups report (.csv or .json) here [OUT/dedupe_groups.csv with --report-only].")
@click.option("--against", "against", type=click.Path(path_type=Path), multiple=True, metavar="OTHER",
              help="Another dataset directory (repeatable): rows of IN that show one of its photos (same pixels, "
                   "same lineage root, or a verified near copy at the thresholds above) go to the ledger as "
                   "contamination. OTHER is only read; its hashes are reused when it has them.")
@common_options
def dedupe_cmd(input_dir: Path, out: Path, method: str, threshold: int | None, verify: str | None,
               min_score: float | None, score_rise: float | None, similar_score: float | None, keep: str,
               on_conflict: str, report_only: bool, report: Path | None, against: tuple[Path, ...], num_proc: int,
               seed: int, limit: int | None, overwrite: bool) -> None:
    """Exact (same pixels) and near (same photo) duplicates, split leakage, label conflicts.

    Near duplicates: perceptual-hash candidates within --threshold of a group's survivor, each
    confirmed by the verifier (--min-score, rising by --score-rise per bit); no chaining. Groups
    get `group` and `similar_group` columns (kept together by `ferdata split`, `--group
    similar`); by default the copy in the
    test, then validation split survives and every removed row goes to the rejects ledger with
    duplicate_of, the distance and the verifier score. With --against OTHER, rows that show a
    photo of OTHER are removed first (reason contamination: OTHER's path, id, origin, the distance
    and the score), whatever the two datasets' classes, image sizes or modes.

    Example:

        ferdata dedupe fer2013 --out fer2013-dedup

        ferdata dedupe fer2013 --out fer2013-dups --report-only --threshold 4

        ferdata dedupe btfer --against fer2013 --against affectnet --out btfer-clean
    """
    from ferdata.dedupe import REPORT_NAME, summary_lines

    # with --report-only and no --report, the step puts the report inside OUT before it is renamed into place
    params = {"method": method, "threshold": threshold, "verify": verify, "min_score": min_score,
              "score_rise": score_rise, "similar_score": similar_score, "keep": keep, "on_conflict": on_conflict,
              "report_only": report_only, "report": str(report) if report is not None else None,
              "against": [str(p) for p in against] or None}
    entry = run_step_command("dedupe", params, inputs=[input_dir, *against], out=out, num_proc=num_proc, seed=seed,
                             limit=limit, overwrite=overwrite)
    report = report or out / REPORT_NAME
    for line in summary_lines(entry.get("info", {}), report):
        click.echo(line)
    if report_only and report.exists():
        from ferdata.dedupe import format_groups, read_groups_report

        for line in format_groups(read_groups_report(report)):
            click.echo(line)


# ---------------------------------------------------------------- super-resolution: train-espcn, upscale

def _int_pair(value: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in value.split(","))
    except ValueError as e:
        raise click.BadParameter(f"expected two integers like 64,32, got {value!r}") from e
    return a, b


@cli.command("train-espcn", short_help="Train an ESPCN super-resolution model on faces.")
@click.argument("hr_dir", type=existing("HR_DIR", file_okay=False))
@out_option
@click.option("--scale", type=click.Choice(["2", "3", "4"]), default="4", show_default=True, help="Upscale factor.")
@click.option("--epochs", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--steps-per-epoch", type=click.IntRange(min=1), default=250, show_default=True)
@click.option("--patch", type=click.IntRange(min=4), default=24, show_default=True, help="LR patch side.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--lr", "learning_rate", type=float, default=2e-3, show_default=True, help="Initial learning rate (cosine decay).")
@click.option("--filters", default="64,32", show_default=True, help="Filters of the first two convolutions.")
@click.option("--activation", type=click.Choice(["relu", "tanh"]), default="relu", show_default=True)
@click.option("--no-skip", is_flag=True, help="Plain 5-3-3 ESPCN, without the linear skip convolution.")
@click.option("--degradations", default="area,bicubic,blur_jpeg", show_default=True,
              help="LR-making methods mixed in training, NAME or NAME:WEIGHT: area, bicubic, bilinear, cv_cubic, "
                   "cv_linear, nearest, blur1_area, area_jpeg75, area_jpeg50, area_noise2, blur_jpeg, mix, mix_smooth, "
                   "mix_aliased, mix_jpeg, mix_nearest (see docs/sr.md).")
@click.option("--variants", type=click.IntRange(min=1), default=4, show_default=True,
              help="LR versions drawn per image for each random degradation (mix*, blur_jpeg).")
@click.option("--init", default=None, help="Start from these weights: a packaged name (espcn_x4) or a .pb / .keras path.")
@click.option("--patience", type=click.IntRange(min=1), default=8, show_default=True, help="Early-stopping patience (epochs).")
@click.option("--validate-on", default="", help="Fixed degradations whose mean validation PSNR picks the best epoch "
              "(e.g. area_jpeg75,area_jpeg50) [default: every one].")
@common_options
def train_espcn_cmd(hr_dir: Path, out: Path, scale: str, filters: str, degradations: str, no_skip: bool,
                    validate_on: str, num_proc: int, limit: int | None, overwrite: bool, **opts: Any) -> None:
    """Train an ESPCN super-resolution model on a folder of high-resolution gray faces.

    Writes MODEL_DIR/model.keras, MODEL_DIR/espcn_xS.pb (for cv2.dnn_superres), metrics.json and
    model_card.md with the held-out PSNR table for every degradation (the people of 10 % of
    HR_DIR by name hash, never trained on).

    Example:

        ferdata train-espcn ../shared/data/faces-hr-144 --scale 4 --out espcn-x4
    """
    import shlex

    from ferdata.sr.train import EspcnTrainConfig, train_espcn

    config = EspcnTrainConfig(scale=int(scale), filters=_int_pair(filters), skip=not no_skip, limit=limit,
                              degradations=tuple(d.strip() for d in degradations.split(",") if d.strip()),
                              validate_on=tuple(d.strip() for d in validate_on.split(",") if d.strip()),
                              extra={"command": "ferdata " + shlex.join(sys.argv[1:])
                                     if Path(sys.argv[0]).name == "ferdata" else ""}, **opts)
    metrics = train_espcn(hr_dir, out=out, config=config, overwrite=overwrite, verbose=not progress_off())
    for method, row in metrics["heldout"].items():
        click.echo(f"held-out x{scale}, LR by {method}: bicubic {row['bicubic']:.2f} dB, ESPCN {row['espcn']:.2f} dB "
                   f"({row['gain']:+.2f})")
    click.echo(f"train-espcn: {metrics['epochs_run']} epochs in {metrics['train_seconds']:.0f}s -> {out}")


def progress_off() -> bool:
    """True when -q turned progress bars off."""
    from ferdata.progress import progress_bars_disabled

    return progress_bars_disabled()


@cli.command("upscale", short_help="Super-resolve images with the face ESPCN (48 -> 224).")
@click.option("--espcn", "inp", required=True, type=existing("IN"),
              help="Input: a dataset directory, a class-folder image tree, or a FER2013 CSV.")
@out_option
@click.option("--scale", type=click.Choice(["auto", "2", "3", "4"]), default="auto", show_default=True,
              help="Upscale factor the model must have; auto: the native packaged factor for the input side and "
                   "--size (48->96: x2, 48->112/144: x3, 48->224: x4).")
@click.option("--size", type=click.IntRange(min=1), default=224, show_default=True, help="Output side in pixels (square).")
@click.option("--model", default="auto", show_default=True,
              help="auto: pick the packaged model from the inputs' spectrum (see sr-inspect); or a packaged name "
                   "(espcn_x4) or a path to a .pb / .keras.")
@click.option("--backend", type=click.Choice(["auto", "tf", "opencv"]), default="auto", show_default=True,
              help="opencv: cv2.dnn_superres per image (.pb only); tf: TensorFlow, batched; auto: opencv for a .pb "
                   "(as fast here, no TensorFlow import), tf for a .keras.")
@click.option("--resize", type=click.Choice(["post", "pre"]), default=None,
              help="post: network then resample to --size; pre: resample to size/scale first [default: post].")
@click.option("--allow-downscale", is_flag=True, help="Allow a --size smaller than the input images.")
@common_options
def upscale_cmd(inp: Path, out: Path, scale: str, size: int, model: str | None, backend: str, resize: str | None,
                allow_downscale: bool, num_proc: int, seed: int, limit: int | None, overwrite: bool) -> None:
    """Super-resolve every image with the packaged face ESPCN (48x48 -> 224x224 by default).

    IN may be a dataset directory, a folder of class folders, or a FER2013 CSV (imported on the
    fly). Labels and other columns are kept; `id` is the new pixels' id and `parent_id` the old one.

    Example:

        ferdata upscale --espcn fer2013.csv --out fer2013-224
    """
    from ferdata.sr.step import upscale_input

    params = {"scale": scale if scale == "auto" else int(scale), "size": size, "model": model, "backend": backend,
              "resize": resize, "allow_downscale": allow_downscale}
    _, entries = upscale_input(inp, out=out, params=params, ctx=context(num_proc, seed, limit), overwrite=overwrite)
    for entry in entries:
        print_summary(entry, out)
        auto = (entry.get("info") or {}).get("auto")
        if auto:
            click.echo(f"model auto -> {auto['chosen']}: {auto['why']}")


@cli.command("sr-inspect", short_help="Tell how the low-resolution images were made.")
@click.argument("src", metavar="DIR", type=existing("DIR", file_okay=False))
@click.option("--sample", type=click.IntRange(min=1), default=500, show_default=True, help="Images to measure.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample.")
@click.option("--scale", type=click.Choice(["2", "3", "4"]), default="4", show_default=True,
              help="Scale of the model `upscale --model auto` would pick.")
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON.")
def sr_inspect_cmd(src: Path, sample: int, seed: int, scale: str, as_json: bool) -> None:
    """Estimate how the low-resolution images of DIR were made (smooth, aliased, JPEG-compressed or OpenCV nearest).

    DIR is a dataset directory or a folder of images. Prints the estimate (spectrum, 8x8 blockiness,
    the faces' symmetry axis) that `ferdata upscale --espcn --model auto` uses, the rule that
    decided, and the model it would pick.

    Example:

        ferdata sr-inspect ../shared/data/fer2013-dev
    """
    import json

    from ferdata.sr.spectrum import estimate_path
    from ferdata.sr.step import auto_candidates

    est = estimate_path(str(src), n=sample, seed=seed)
    candidates = auto_candidates(int(scale))
    if as_json:
        click.echo(json.dumps({**est.to_dict(), "model": candidates[est.regime]}, indent=2))
        return
    click.echo(est.summary())
    click.echo(f"quartiles {est.quartiles[0]:.4f} .. {est.quartiles[1]:.4f}; skipped {est.skipped}")
    click.echo(f"upscale --model auto would use: {candidates[est.regime]}")


# ---------------------------------------------------------------- training: train, evaluate, export-tflite

def _print_notes(notes: list[str]) -> None:
    for note in notes:
        click.echo(f"note: {note}", err=True)


def _print_metrics(metrics: dict[str, Any]) -> None:
    top2 = metrics.get("top2_accuracy")
    left_out = [f"{metrics[k]} {what}" for k, what in (("excluded_seen", "seen in training"),
                                                      ("dropped_rows", "of classes the model cannot output"))
                if metrics.get(k)]
    left = f" (left out: {', '.join(left_out)})" if left_out else ""
    click.echo(f"{metrics.get('split', 'validation')}: accuracy {metrics['accuracy']:.4f}"
               f"{f', top-2 {top2:.4f}' if top2 is not None else ''}, macro F1 {metrics['macro_f1']:.4f}, "
               f"{metrics['num_examples']} images{left}, {metrics['inference_ms_per_image']:.2f} ms/image")
    for name, m in metrics["per_class"].items():
        click.echo(f"  {name:<10} precision {m['precision']:.3f}  recall {m['recall']:.3f}  "
                   f"F1 {m['f1']:.3f}  support {m['support']}")
    for warning in metrics.get("warnings", []):
        click.echo(f"warning: {warning}", err=True)


def _image_size(value: str | None) -> int | tuple[int, int] | None:
    if value is None:
        return None
    try:
        parts = [int(v) for v in value.lower().replace("x", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise click.BadParameter(f"{value!r} is not a size; use N or HxW, e.g. 224 or 48x48", param_hint="--image-size")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


@cli.command("train", short_help="Train a model on a dataset directory.")
@click.argument("src", type=existing("DIR", file_okay=False))
@out_option
@click.option("--model", "model_name",
              type=click.Choice(["shallow-cnn", "shallow-cnn-std", "fer-cnn", "efficientnet-b0", "tiny-cnn", "refine-cnn"]),
              default="shallow-cnn", show_default=True, help="Model factory (see docs/training.md).")
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True, help="Maximum epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help="Adam's initial learning rate.")
@click.option("--class-weights", type=click.Choice(["none", "simple", "conservative", "inverse"]), default="none",
              show_default=True, help="Loss weights per class (papers 001 and 003).")
@click.option("--augment", type=click.Choice(["none", "paper001", "paper002", "light"]), default="none", show_default=True,
              help="Augmentation preset of the training batches.")
@click.option("--image-size", default=None, help="Input size N or HxW (default: the model's; tiny-cnn: the data's).")
@click.option("--channels", type=click.Choice(["1", "3"]), default=None, help="Input channels (default: the model's).")
@click.option("--patience", type=click.IntRange(min=0), default=10, show_default=True,
              help="Early-stopping patience in epochs (0: off).")
@click.option("--schedule", type=click.Choice(["plateau", "cosine"]), default="plateau", show_default=True,
              help="Learning rate: plateau (halved when validation loss stalls) or cosine (decays to 0 over the epochs).")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              show_default=True, help="Held-out share of train when the dataset has no validation split.")
@click.option("--weights", default="imagenet", show_default=True,
              help="efficientnet-b0 backbone weights: imagenet, none, or a local .h5 file.")
@click.option("--allow-download", is_flag=True, help="Let Keras download ImageNet weights (efficientnet-b0).")
@click.option("--soft-labels", default=None,
              help="Train on the vote distribution of this column (ferplus_votes: FER+'s cross-entropy mode).")
@common_options
def train_cmd(src: Path, out: Path, model_name: str, epochs: int, batch_size: int, lr: float, class_weights: str,
              augment: str, image_size: str | None, channels: str | None, patience: int, schedule: str,
              val_fraction: float, weights: str, allow_download: bool, soft_labels: str | None, num_proc: int, seed: int,
              limit: int | None, overwrite: bool) -> None:
    """Train a model on a dataset directory; write a run directory.

    RUN gets model.keras (best validation-accuracy epoch), history.csv, accuracy.png and loss.png,
    confusion.csv/.png (counts and row-normalised), metrics.json and labels.json. A dataset
    without a validation split gets a stratified, seeded one (said on screen).

    Example:

        ferdata train fer2013 --model fer-cnn --epochs 40 --class-weights simple --augment paper001 --out runs/fer
    """
    from ferdata.dataset import check_dataset_dir, prepare_output
    from ferdata.train.config import TrainConfig
    from ferdata.train.run import train_run

    check_dataset_dir(src)  # paths and output first: TensorFlow takes seconds to load
    prepare_output(out, overwrite=overwrite, inputs=[src])
    config = TrainConfig(model=model_name, epochs=epochs, batch_size=batch_size, lr=lr, class_weights=class_weights,
                         augment=augment, image_size=_image_size(image_size), channels=int(channels) if channels else None,
                         patience=patience, schedule=schedule, val_fraction=val_fraction,
                         weights=None if weights.lower() == "none" else weights, allow_download=allow_download,
                         seed=seed, limit=limit, soft_labels=soft_labels)
    notes: list[str] = []
    result = train_run(src, out, config, overwrite=overwrite, verbose=0, notes=notes)
    _print_notes(notes)
    _print_metrics(result["metrics"])
    click.echo(f"train: best epoch {result['best_epoch']} of {result['epochs_run']} -> {out}")


@cli.command("evaluate", short_help="Evaluate a trained run on any dataset directory.")
@click.argument("run_dir", metavar="RUN", type=existing("RUN", file_okay=False))
@click.argument("src", metavar="DIR", type=existing("DIR", file_okay=False))
@click.option("--split", default="test", show_default=True, help="Split of DIR to evaluate.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output directory (default RUN/eval/<DIR name>-<split>).")
@click.option("--saliency", type=click.IntRange(min=0), default=0, show_default=True,
              help="Write saliency maps for N images per class (paper 002).")
@click.option("--label-map", type=existing("label map", dir_okay=False), default=None,
              help="YAML {dataset class: model class} for datasets whose names differ; a class mapped to null is "
                   "left out (counted).")
@click.option("--include-seen", is_flag=True,
              help="Also score the rows the run was trained on (default: left out, counted).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@common_options
def evaluate_cmd(run_dir: Path, src: Path, split: str, out: Path | None, saliency: int, label_map: Path | None,
                 include_seen: bool, batch_size: int, num_proc: int, seed: int, limit: int | None,
                 overwrite: bool) -> None:
    """Metrics and plots of a trained run on any dataset directory (cross-dataset testing).

    Labels are matched by class name (through the label maps' synonyms, or --label-map); images
    are resized and converted to the model's input. Rows the run was trained on (same id or
    root_id, RUN/seen.parquet) are left out and counted; on the dataset a run was trained on
    without a validation split, the held-out part train wrote down is what is scored.

    Example:

        ferdata evaluate runs/fer btfer --split test --saliency 3
    """
    from ferdata.dataset import check_dataset_dir
    from ferdata.resources import load_yaml
    from ferdata.train.run import check_run_dir, evaluate_run

    if limit is not None:
        raise click.UsageError("evaluate does not take --limit (metrics on part of a split would be reported as "
                               "the split's); evaluate a smaller dataset instead")
    check_run_dir(run_dir)  # paths first: TensorFlow takes seconds to load (evaluate_run checks the rest before it)
    check_dataset_dir(src)
    mapping = None
    if label_map is not None:
        raw = load_yaml(label_map)
        if not isinstance(raw, dict) or not raw:
            raise click.BadParameter(f"{label_map} must be a YAML mapping of dataset classes to model classes "
                                     "(null leaves a class out)", param_hint="--label-map")
        mapping = {str(k): None if v is None else str(v) for k, v in raw.items()}
    notes: list[str] = []
    metrics = evaluate_run(run_dir, src, split=split, out=out, saliency=saliency, label_map=mapping,
                           batch_size=batch_size, overwrite=overwrite, notes=notes, include_seen=include_seen)
    _print_notes(notes)
    _print_metrics(metrics)
    click.echo(f"evaluate: -> {metrics['out']}")


@cli.command("export-tflite", short_help="Convert a run's model to TensorFlow Lite.")
@click.argument("run_dir", metavar="RUN", type=existing("RUN", file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Output .tflite file (default RUN/model.tflite).")
@click.option("--overwrite", is_flag=True, help="Replace the output file if it exists.")
@quiet_option
def export_tflite_cmd(run_dir: Path, out: Path | None, overwrite: bool) -> None:
    """Convert a run's model.keras to TensorFlow Lite for edge deployment (paper 001).

    Example:

        ferdata export-tflite runs/fer
    """
    from ferdata.train.run import export_tflite

    path = export_tflite(run_dir, out, overwrite=overwrite)
    click.echo(f"export-tflite: {path.stat().st_size / 1e6:.1f} MB -> {path}")


@cli.command("benchmark", short_help="Train on each dataset and test on every one (paper 001's protocol).")
@click.option("--train", "train_sets", multiple=True, metavar="NAME=DIR",
              help="A training set (repeatable): one model per training set and seed.")
@click.option("--test", "test_sets", multiple=True, metavar="NAME=DIR",
              help="A test set (repeatable); a training set may be one too (its in-domain cell).")
@out_option
@click.option("--recipe", type=existing("benchmark recipe", dir_okay=False), default=None,
              help="A YAML file whose benchmark: section gives the datasets and options (the command line wins).")
@click.option("--model", "model_name",
              type=click.Choice(["shallow-cnn", "shallow-cnn-std", "fer-cnn", "efficientnet-b0", "tiny-cnn", "refine-cnn"]),
              default="shallow-cnn", show_default=True, help="Model factory (see docs/training.md).")
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True, help="Maximum epochs.")
@click.option("--image-size", default=None, help="Input size N or HxW (default: the model's; tiny-cnn: the data's).")
@click.option("--channels", type=click.Choice(["1", "3"]), default=None, help="Input channels (default: the model's).")
@click.option("--seeds", default="0,1,2", show_default=True, help="Comma-separated seeds: one model per seed.")
@click.option("--classes", type=click.Choice(["8", "7", "6", "3"]), default="7", show_default=True,
              help="The label space (paper 003's groupings); test classes outside it are dropped and counted.")
@click.option("--class-weights", type=click.Choice(["none", "simple", "conservative", "inverse"]), default="none",
              show_default=True, help="Loss weights per class (papers 001 and 003).")
@click.option("--augment", type=click.Choice(["none", "paper001", "paper002", "light"]), default="none",
              show_default=True, help="Augmentation preset of the training batches.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help="Adam's initial learning rate.")
@click.option("--patience", type=click.IntRange(min=0), default=10, show_default=True,
              help="Early-stopping patience in epochs (0: off).")
@click.option("--split", "test_splits", multiple=True, metavar="NAME=SPLIT",
              help="The split a test set is scored on (default: test, else its only split).")
@click.option("--train-split", "train_splits", multiple=True, metavar="NAME=SPLIT",
              help="The split a training set trains on (default: train).")
@click.option("--queries", default="btfer-queries", show_default=True,
              help="Query manifest whose demographic terms group crawled test rows (groups.csv).")
@click.option("--bootstrap", type=click.IntRange(min=100), default=1000, show_default=True,
              help="Bootstrap replicates of the 95 % intervals.")
@click.option("--overwrite", is_flag=True, help="Start afresh in an existing output (default: resume it).")
@quiet_option
@click.pass_context
def benchmark_cmd(ctx: click.Context, out: Path, overwrite: bool, **options: Any) -> None:
    """Train one model per training set and seed; score each on every test set under one label space.

    Writes OUT/results.csv (every cell and seed: accuracy, macro F1, per-class recall, rows
    dropped and left out as seen), summary.csv (mean and std over seeds, bootstrap 95 %
    interval), groups.csv (accuracy per demographic term of crawled test rows), confusion
    matrices and report.html. Rows a model was trained on are never scored. A killed benchmark
    started again with the same options keeps its finished cells. See docs/benchmark.md.

    Example:

        ferdata benchmark --train fer=fer2013 --test fer=fer2013 --test btfer=btfer --seeds 0,1,2 --out bench
    """
    from ferdata.benchmark import run_benchmark

    config = _benchmark_config(ctx, options)
    result = run_benchmark(config, out, overwrite=overwrite, echo=click.echo)
    kept = f", {result.resumed} kept from an earlier run" if result.resumed else ""
    click.echo(f"benchmark: {len(result.cells)} cells{kept} in {result.seconds:.0f}s -> {result.summary}, "
               f"{result.report}")


#: ``ferdata benchmark``'s named-dataset options: (recipe key, parameter, option)
_BENCH_NAMED = (("train", "train_sets", "--train"), ("test", "test_sets", "--test"),
                ("split", "test_splits", "--split"), ("train_split", "train_splits", "--train-split"))


def _benchmark_config(ctx: click.Context, options: dict[str, Any]) -> Any:
    """The :class:`~ferdata.benchmark.BenchmarkConfig` of the options, over the ``--recipe`` file's."""
    from click.core import ParameterSource

    from ferdata.benchmark import BenchmarkConfig, dataset_specs, parse_named, parse_seeds
    from ferdata.benchmark.recipe import OPTION_KEYS, load_recipe

    recipe = load_recipe(options.pop("recipe")) if options.get("recipe") else {}
    named = {key: parse_named(options.pop(param), flag) or recipe.get(key, {}) for key, param, flag in _BENCH_NAMED}
    for key in OPTION_KEYS:
        param = "model_name" if key == "model" else key
        if key in recipe and ctx.get_parameter_source(param) != ParameterSource.COMMANDLINE:
            options[param] = recipe[key]
    if not named["train"] or not named["test"]:
        raise click.UsageError("give at least one --train NAME=DIR and one --test NAME=DIR (or a --recipe FILE "
                               "naming them)")
    for key, _, flag in _BENCH_NAMED[2:]:
        pool = named["train" if key == "train_split" else "test"]
        unknown = sorted(set(named[key]) - set(pool))
        if unknown:
            raise click.BadParameter(f"{', '.join(unknown)} not among the datasets named ({', '.join(pool)})",
                                     param_hint=flag)
    specs = {"train_splits": named["train_split"], "test_splits": named["split"]}
    try:
        numbers = {k: int(options[k]) for k in ("epochs", "batch_size", "patience", "bootstrap", "classes")}
        lr = float(options["lr"])
        channels = int(options["channels"]) if options["channels"] else None
    except (TypeError, ValueError) as e:
        raise click.BadParameter(f"not a number: {e}", param_hint="--recipe") from e
    size = options["image_size"]
    return BenchmarkConfig(train=dataset_specs(named["train"], **specs), test=dataset_specs(named["test"], **specs),
                           model=options["model_name"], image_size=_image_size(None if size is None else str(size)),
                           channels=channels,
                           seeds=parse_seeds(str(options["seeds"])), class_weights=options["class_weights"],
                           augment=options["augment"], lr=lr, queries=str(options["queries"]), **numbers)


# ---------------------------------------------------------------- crawl and review

_CRAWL_ENGINES = ["bing", "baidu", "google", "flickr", "urls", "loopback"]


@cli.command("crawl", short_help="Crawl web images per class, with provenance.")
@click.option("--queries", default="btfer-queries", show_default=True,
              help="Query manifest: a YAML file, or the name of a packaged one.")
@out_option
@click.option("--engine", type=click.Choice(_CRAWL_ENGINES), default="bing", show_default=True,
              help="Search engine; 'urls' reads image URLs from the manifest; 'loopback' is Bing's format on a "
                   "local server.")
@click.option("--per-class", type=click.IntRange(min=1), default=100, show_default=True,
              help="Good images to keep per class.")
@click.option("--base-url", default=None,
              help="Replace the engine's base URL (also FERDATA_CRAWL_BASE_URL); required by --engine loopback.")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Fetch cache shared by re-runs.  [default: OUT/../.ferdata-crawl]")
@click.option("--threads", type=click.IntRange(1, 16), default=4, show_default=True, help="Download threads.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Read timeout per request, seconds (connect timeout: 5s, whole download: 30s).")
@click.option("--max-bytes", type=click.IntRange(min=1024), default=10_000_000, show_default=True,
              help="Largest download accepted, bytes.")
@click.option("--retries", type=click.IntRange(0, 5), default=2, show_default=True,
              help="Retries of a timeout, connection error, HTTP 429 or 5xx (backoff 1s, 2s, ...).")
@common_options
def crawl_cmd(queries: str, out: Path, engine: str, per_class: int, base_url: str | None, cache: Path | None,
              threads: int, timeout: float, max_bytes: int, retries: int, **opts: Any) -> None:
    """Crawl web images per class from a query manifest, with provenance (icrawler).

    Every class's queries (expression phrases x demographic terms) are visited round-robin until
    the class has --per-class good images. Downloads are size- and time-limited and checked by
    decoding; failures (http_404, timeout, not_an_image, ...) go to the rejects ledger. A re-run
    with the same cache skips URLs already fetched.

    Example:

        ferdata crawl --queries btfer-queries --engine bing --per-class 600 --out btfer-crawl
    """
    cache = cache or out.resolve().parent / ".ferdata-crawl"
    params = {"queries": queries, "engine": engine, "per_class": per_class, "base_url": base_url or "",
              "cache": str(cache), "threads": threads, "read_timeout": timeout, "max_bytes": max_bytes,
              "retries": retries}
    run_step_command("crawl", params, inputs=[], out=out, **opts)


@cli.command("review", short_help="Write contact sheets and a review.csv to mark rejects.")
@click.argument("dataset", type=existing("dataset directory", file_okay=False))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Review directory.  [default: DATASET-review]")
@click.option("--thumb-size", type=click.IntRange(16, 1024), default=128, show_default=True,
              help="Longest side of the thumbnails, pixels.")
@click.option("--overwrite", is_flag=True, help="Regenerate an existing review directory (keeps its decisions).")
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
def review_cmd(dataset: Path, out: Path | None, thumb_size: int, overwrite: bool, quiet: bool) -> None:
    """Write an HTML contact sheet per class and a review.csv to mark images to reject.

    Open REVIEW_DIR/index.html, set `decision` to `reject` in REVIEW_DIR/review.csv for the images
    to exclude, then run `ferdata apply-review` (or a recipe's review_exclusions step).

    Example:

        ferdata review btfer-crawl --out btfer-review
    """
    from ferdata.review import REVIEW_CSV, write_review

    set_quiet(quiet)
    path = write_review(dataset, out, thumb_size=thumb_size, overwrite=overwrite)
    click.echo(f"review: contact sheets in {path / 'index.html'}, decisions in {path / REVIEW_CSV}")


@cli.command("apply-review", short_help="Move the rows marked reject in a review.csv to the ledger.")
@click.argument("dataset", type=existing("dataset directory", file_okay=False))
@click.argument("review_csv", type=existing("review CSV"))
@out_option
@click.option("--allow-missing", is_flag=True,
              help="Accept rejected ids that match no row (by id, parent_id or root_id) and no earlier reject.")
@common_options
def apply_review_cmd(dataset: Path, review_csv: Path, out: Path, allow_missing: bool, **opts: Any) -> None:
    """Move the rows marked `reject` in a review.csv to the rejects ledger (reason: review).

    REVIEW_CSV is the edited review.csv or the review directory holding it. A reviewed id matches a
    row's `id`, `parent_id` or `root_id`, so a review of the crawl output applies after `crop`. A
    rejected id that matches nothing (and was not removed earlier) is an error unless --allow-missing.

    Example:

        ferdata apply-review btfer-crawl btfer-review/review.csv --out btfer-reviewed
    """
    from ferdata.review import check_review_dir

    run_step_command("apply-review", {"review_csv": str(check_review_dir(review_csv)),
                                            "allow_missing": allow_missing}, inputs=[dataset], out=out, **opts)


# ---------------------------------------------------------------- refinement: refine

@cli.command("refine", short_help="Find label errors, or relabel with paper 000's loop.")
@click.argument("dataset_dir", metavar="DIR", type=existing("DIR", file_okay=False))
@out_option
@click.option("--model", default="auto", show_default=True,
              help="CNN trained from scratch every round: auto (relabel: fer-cnn, flag/prune: shallow-cnn-std), "
                   "shallow-cnn-std, shallow-cnn, refine-cnn, fer-cnn, efficientnet-b0, tiny-cnn.")
@click.option("--rounds", type=int, default=None, help="Maximum number of trainings [default: relabel 5, flag/prune 1].")
@click.option("--epochs", type=int, default=None,
              help="Epochs per training, best val-acc epoch kept [default: relabel 40; flag/prune about 150,000 "
                   "training images per model, 10-40 epochs: 10 on a whole FER2013, 40 on a few thousand rows].")
@click.option("--precision-target", type=float, default=0.90, show_default=True,
              help="Stop when every class's precision on the current set reaches this, in (0, 1].")
@click.option("--offdiag-max", type=int, default=9, show_default=True,
              help="... or when every off-diagonal count of the confusion matrix is at most this.")
@click.option("--mode", type=click.Choice(["flag", "prune", "relabel"]), default="flag", show_default=True,
              help="flag (annotate suspects, change nothing), prune (suspects to the rejects ledger) or relabel "
                   "(paper 000's loop; WARNING: on FER2013 vs FER+ it took label accuracy from 0.79 to 0.44, "
                   "use it to reproduce the paper only).")
@click.option("--cv", type=int, default=None,
              help="K: out-of-sample K-fold predictions each round; 1: in-sample [default: relabel 1, flag/prune 5].")
@click.option("--rule", type=click.Choice(["argmax", "posterior", "confident"]), default=None,
              help="Suspect rule: argmax (predicted != given), posterior (the probability that the label is "
                   "wrong, from the model calibrated through confident learning's estimate of which classes "
                   "get confused, cut where the expected F1 is highest) or confident (confident learning's per-class "
                   "thresholds) [default: relabel argmax, flag/prune posterior].")
@click.option("--top", type=click.IntRange(min=1), default=None,
              help="Flag exactly the K rows ranked most suspect (lowest normalised margin) instead of the rule.")
@click.option("--max-flag-rate", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="Guard: above this share of suspects (or under 2x chance accuracy) nothing is changed.")
@click.option("--force", is_flag=True, help="Act on the suspects even when the guard refuses.")
@click.option("--include-validation", is_flag=True, help="Also refine the validation split.")
@click.option("--include-test", is_flag=True, help="Also refine the test split (its scores become optimistic).")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Training batch size.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam's initial learning rate.")
@click.option("--patience", type=int, default=10, show_default=True, help="Early-stopping patience in epochs (0: off).")
@click.option("--schedule", type=click.Choice(["plateau", "cosine"]), default=None,
              help="Learning rate: plateau (halved when validation loss stalls, paper 000) or cosine (decays "
                   "to 0 over the epochs) [default: relabel plateau, flag/prune cosine].")
@click.option("--augment", type=click.Choice(["none", "paper001", "paper002", "light"]), default=None,
              help="Augmentation preset while training [default: relabel none, flag/prune light].")
@click.option("--tta/--no-tta", default=None,
              help="Average each prediction with that of the mirrored image [default: flag/prune on, relabel off].")
@click.option("--image-size", type=int, default=None, help="Side of the model input (default: the images' size).")
@click.option("--compare/--no-compare", default=None,
              help="Train the same CNN on the original and on the refined data and compare them on the held-out "
                   "split [default: relabel/prune on, flag off: flag changes nothing].")
@common_options
def refine_cmd(dataset_dir: Path, out: Path, num_proc: int, seed: int, limit: int | None, overwrite: bool,
               compare: bool | None, **options: Any) -> None:
    """Find label errors (flag / prune, out-of-sample) or relabel with paper 000's loop.

    --mode flag (the default) or prune: one 5-fold out-of-sample pass of shallow-cnn-std (epochs from
    the rows: 10 on a whole FER2013; cosine schedule, light augmentation, mirrored test-time average),
    suspects by --rule posterior (the probability that the label is wrong; the default), argmax
    (prediction != label) or confident, or --top K by normalised margin. --mode relabel: paper 000's loop (train,
    keep the diagonal, repeat; relabel with the last model); it writes the model's mistakes into
    the labels (FER2013 vs FER+: 0.79 -> 0.44 correct), so use it only to reproduce the paper. A
    guard refuses to change anything when the model cannot judge the labels (accuracy under 2x
    chance, or more suspects than --max-flag-rate) and says what it would have flagged.

    Writes RUN (--out): rounds.csv, distribution.csv, comparison.csv (prune and relabel, when
    something changed; flag with --compare), summary.md, a confusion matrix and learning curves per round, and RUN/dataset (the
    refined dataset directory). The test split (and validation, unless --include-validation) is
    never relabelled unless --include-test. Run the same command again to resume a killed run
    after its last finished fold or round.

    Example:

        ferdata refine fer2013 --out fer2013-flags --mode flag
    """
    from ferdata.errors import UsageError
    from ferdata.refine import RefineConfig, refine

    if limit is not None:
        raise UsageError("refine does not take --limit; make a smaller dataset first (e.g. with ferdata balance)")
    from ferdata.refine.outputs import result_line, round_line

    config = RefineConfig(seed=seed, compare=compare, **options)
    result = refine(dataset_dir, out, config, overwrite=overwrite, num_proc=num_proc,
                    on_round=lambda r: click.echo(round_line(r, mode=config.mode), err=True))
    click.echo(result_line(result.guard, mode=config.mode))
    for row in result.comparison:
        click.echo(f"{row['dataset']}: held-out accuracy {row['heldout_accuracy']:.4f} ({row['heldout_split']})")
    click.echo(f"refine: {len(result.rounds)} rounds, stopped by {result.stop_reason} -> {result.dataset_dir}")



# ---------------------------------------------------------------- labels: compare

@cli.group("labels", short_help="Inspect and compare label columns.")
def labels_group() -> None:
    """Inspect label columns (e.g. FER2013 vs FER+)."""


@labels_group.command("compare", short_help="Measure the agreement of two label columns.")
@click.argument("dataset_dir", metavar="DIR", type=existing("DIR", file_okay=False))
@click.option("--a", "col_a", required=True, help="First label column (rows of the matrix), e.g. label_fer2013.")
@click.option("--b", "col_b", required=True, help="Second label column (columns of the matrix), e.g. label.")
@click.option("--split", "splits", multiple=True, help="Split to include (repeatable; default: every split).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the result as JSON to this file.")
def labels_compare_cmd(dataset_dir: Path, col_a: str, col_b: str, splits: tuple[str, ...], json_out: Path | None
                       ) -> None:
    """Agreement of two label columns: matrix, per-class agreement, counts, Cohen's kappa.

    Classes are matched by name. A column may be ferplus_votes (its FER+ majority label).

    Example:

        ferdata labels compare fer2013-ferplus --a label_fer2013 --b label
    """
    import json

    from ferdata.labels.compare import compare_labels, format_table

    result = compare_labels(dataset_dir, a=col_a, b=col_b, splits=list(splits) or None)
    click.echo(format_table(result))
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2), encoding="utf-8")


# ---------------------------------------------------------------- report

@cli.command("report", short_help="Write a self-contained HTML report of a dataset or run.")
@click.argument("directory", metavar="DIR", type=existing("DIR", file_okay=False))
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The HTML file.  [default: DIR/report.html]")
@click.option("--per-class", type=click.IntRange(0, 1000), default=24, show_default=True,
              help="Sample tiles per class and split (0: no sample grid).")
@click.option("--assets", is_flag=True, help="Write thumbnails as files beside the page (lazy-loaded) instead of "
                                             "embedding them; for very large reports.")
@click.option("--before", type=existing("before", file_okay=False), default=None,
              help="The dataset before an upscale step, for the super-resolution pairs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampled tiles.")
@click.option("--budget-mb", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Warn when the report is larger than this.")
@click.option("--no-review", is_flag=True, help="Tiles are not clickable (no review.csv button).")
def report_cmd(directory: Path, out: Path | None, per_class: int, assets: bool, before: Path | None, seed: int,
               budget_mb: float, no_review: bool) -> None:
    """Write one self-contained HTML report of a dataset or run directory (opens offline).

    Sections appear when their columns exist: data card, pipeline funnel, classes per split,
    samples, duplicates, rejects, quality, label suspects, super-resolution pairs, face crops;
    for train/evaluate/refine runs: learning curves, confusion matrix, per-class P/R/F1, rounds.
    Click tiles to mark rejects and save a review.csv for `ferdata apply-review`.

    Example:

        ferdata report fer2013-improved --per-class 24
    """
    from ferdata.report import write_report

    result = write_report(directory, out, per_class=per_class, assets=assets, before=before, seed=seed,
                          budget_mb=budget_mb, review=not no_review)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"report: {result.bytes / 1e6:.2f} MB, {result.images} images, sections "
               f"{', '.join(result.sections)} in {result.seconds:.1f}s -> {result.path}")


def main() -> None:
    """Entry point of ``python -m ferdata``."""
    cli(prog_name="ferdata")
