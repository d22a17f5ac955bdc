"""Recipes: named, ordered lists of steps in ``pipelines/NAME.yaml``, run by ``ferdata build``.

A recipe::

    name: fer2013-improved
    description: paper 004's improved FER2013
    variables:            # set on the command line: ferdata build NAME --source X
      source: null        # null = required
      size: 224
    steps:
      - step: import_fer2013
        csv: "{source}"
      - step: upscale
        size: "{size}"
    export: hub           # optional: also write the Hub layout (parquet + card) to OUT/hub

Values ``"{var}"`` are replaced by the variable (keeping its type), ``"{var*2}"`` by the variable
times a number (rounded to an integer: over-fetching ``per_class``), and ``"x-{var}"`` is string
formatting. An optional step names a variable in ``when:``; it runs only when that variable is set
(not ``""``, ``[]`` or ``false``), and is left out of the build otherwise, as if the recipe did not
list it::

      supplement: ""      # in variables: "" = no supplement
    ...
      - step: balance
        when: supplement  # only with --supplement DIR
        supplement: "{supplement}"

The whole recipe is validated before any work: unknown steps, parameters or variables (a skipped
step's parameters included), and missing required variables, are errors that list the valid names.

Resumable and atomic: every finished step is checkpointed as a dataset directory under
``.OUT.build/`` (a sibling of ``OUT``) with ``state.json`` (written to a temporary file and
renamed) recording the build's fingerprint: recipe, variables, seed, limit and ferdata's version.
Running the same command again continues after the last finished step, so no row is lost or
duplicated; other settings (say, no ``--limit`` after a ``--limit 50`` trial) or an unreadable
state start over with a warning. The finished dataset is assembled in a temporary sibling and
renamed into ``OUT`` (an existing ``OUT`` is replaced only by that rename).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from ferdata.engines import Engine, get_engine
from ferdata.errors import RecipeError, StepFailed, UsageError
from ferdata.progress import step_line
from ferdata.resources import load_yaml, resource_dir
from ferdata.steps import Step, StepContext, get_step

logger = logging.getLogger(__name__)
_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:\*(\d+(?:\.\d+)?))?\}")
_RECIPE_KEYS = {"name", "description", "variables", "steps", "export", "report"}


@dataclass
class Recipe:
    """A validated recipe: steps with their configs."""

    name: str
    description: str
    variables: dict[str, Any]
    steps: list[tuple[Step, Any]]
    export: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    #: also write OUT/report.html (``report: true`` in the recipe; see :mod:`ferdata.report`)
    report: bool = False

    def settings(self, ctx: StepContext | None = None) -> dict[str, Any]:
        """Everything a build's result depends on: the recipe, its variables, the seed, the limit and
        ferdata's version (not ``num_proc``: it never changes the result)."""
        from ferdata import __version__

        ctx = ctx or StepContext()
        return {"recipe": self.raw, "variables": self.variables, "seed": ctx.seed, "limit": ctx.limit,
                "ferdata": __version__}

    def fingerprint(self, ctx: StepContext | None = None) -> str:
        """Hash of :meth:`settings` (what a checkpoint must match to be reused)."""
        text = json.dumps(self.settings(ctx), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def recipe_names() -> list[str]:
    """Names of the recipes that ship with ferdata."""
    return sorted(p.stem for p in resource_dir("pipelines").glob("*.yaml"))


def recipe_path(name_or_path: str | Path) -> Path:
    """Resolve a recipe name (``btfer``) or a path to a YAML file.

    Raises:
        UsageError: when it is neither, listing the packaged recipes.
    """
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"}:
        if not path.exists():
            raise UsageError(f"recipe file not found: {path}")
        return path
    packaged = resource_dir("pipelines") / f"{name_or_path}.yaml"
    if packaged.exists():
        return packaged
    raise UsageError(f"unknown recipe {str(name_or_path)!r}; packaged recipes: {', '.join(recipe_names())} "
                     "(or give a path to a .yaml file)")


def _value(match: re.Match[str], variables: dict[str, Any]) -> Any:
    value = variables[match.group(1)]
    if match.group(2) is None:
        return value
    try:
        return int(round(float(value) * float(match.group(2))))
    except (TypeError, ValueError) as e:
        raise RecipeError(f"variable {match.group(1)}={value!r} must be a number to be multiplied") from e


def _substitute(value: Any, variables: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _VAR.fullmatch(value)
        if whole:
            return _value(whole, variables)
        return _VAR.sub(lambda m: str(_value(m, variables)), value)
    if isinstance(value, list):
        return [_substitute(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, variables) for k, v in value.items()}
    return value


def _used_variables(value: Any) -> set[str]:
    if isinstance(value, str):
        return {m.group(1) for m in _VAR.finditer(value)}
    if isinstance(value, list):
        return set().union(*(_used_variables(v) for v in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(_used_variables(v) for v in value.values())) if value else set()
    return set()


#: Where the data a source step reads comes from (said when a recipe's required variable is missing).
SOURCE_HINTS = {
    "import_fer2013": "fer2013.csv is the Kaggle 'Challenges in Representation Learning: Facial Expression "
                      "Recognition Challenge' download (https://www.kaggle.com/c/challenges-in-representation-learning-"
                      "facial-expression-recognition-challenge/data); FER+ labels for it: fer2013new.csv from "
                      "https://github.com/microsoft/FERPlus",
    "import_affectnet": "AffectNet is licensed by request from its authors (http://mohammadmahoor.com/affectnet/)",
    "import_folder": "any class-per-folder image tree (SRC/<class>/* or SRC/<split>/<class>/*)",
}


def _missing_message(name: str, raw: dict[str, Any], declared: dict[str, Any], missing: list[str]) -> str:
    """One line: the missing variables, every variable with its default, where the data comes from."""
    flags = ", ".join("--" + m.replace("_", "-") for m in missing)
    listed = ", ".join(f"--{k.replace('_', '-')} " + ("(required)" if v is None else repr(v)) for k, v in declared.items())
    first = (raw.get("steps") or [{}])[0]
    step = first.get("step", "") if isinstance(first, dict) else ""
    hint = SOURCE_HINTS.get(str(step), "")
    return (f"recipe {name!r} needs {flags} (its variables: {listed}), e.g. ferdata build {name} "
            + " ".join(f"--{m.replace('_', '-')} {'fer2013.csv' if step == 'import_fer2013' else 'VALUE'}"
                       for m in missing)
            + f" --out {name}-out" + (f"; {hint}" if hint else "")
            + "; no data yet? ferdata demo --out ferdata-demo runs offline")


def load_recipe(name_or_path: str | Path, variables: dict[str, Any] | None = None) -> Recipe:
    """Load and validate a recipe, applying ``variables`` (None values keep the defaults).

    Raises:
        RecipeError: for an unknown step, parameter or variable, or a missing required variable.

    Example:
        >>> recipe = load_recipe("fer2013-improved", {"source": "fer2013.csv"})   # doctest: +SKIP
    """
    path = recipe_path(name_or_path)
    raw = load_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("steps"), list) or not raw["steps"]:
        raise RecipeError(f"{path}: a recipe is a mapping with a non-empty 'steps' list")
    unknown_keys = sorted(set(raw) - _RECIPE_KEYS)
    if unknown_keys:
        raise RecipeError(f"{path}: unknown keys {unknown_keys}; allowed: {', '.join(sorted(_RECIPE_KEYS))}")
    declared = dict(raw.get("variables") or {})
    given = {k.replace("-", "_"): v for k, v in (variables or {}).items() if v is not None}
    unknown_vars = sorted(set(given) - set(declared))
    if unknown_vars:
        raise RecipeError(f"recipe {path.stem!r} has no variable {', '.join(unknown_vars)}; "
                          f"its variables: {', '.join(sorted(declared)) or '(none)'}")
    values = {**declared, **given}
    missing = sorted(k for k, v in values.items() if v is None)
    if missing:
        raise RecipeError(_missing_message(path.stem, raw, declared, missing))
    steps = []
    for i, item in enumerate(raw["steps"], 1):
        if not isinstance(item, dict) or "step" not in item:
            raise RecipeError(f"{path}: step {i} must be a mapping with a 'step' key")
        params = {k: v for k, v in item.items() if k not in ("step", "when")}
        undeclared = sorted(_used_variables(params) - set(values))
        if undeclared:
            raise RecipeError(f"{path}: step {i} uses undeclared variables {undeclared}")
        step = get_step(str(item["step"]))
        if "when" in item and not _is_set(path, i, item["when"], values):
            step.check_param_names(params)  # a skipped step's parameters are checked too
            continue
        steps.append((step, step.make_config(_substitute(params, values))))
    if not steps or not steps[0][0].source:
        raise RecipeError(f"{path}: the first step must create the dataset (an import or crawl step), "
                          f"got {steps[0][0].name if steps else '(every step skipped by when:)'!r}")
    export = raw.get("export")
    if export not in (None, "hub", "imagefolder"):
        raise RecipeError(f"{path}: export must be hub or imagefolder, got {export!r}")
    report = raw.get("report", False)
    if not isinstance(report, bool):
        raise RecipeError(f"{path}: report must be true or false, got {report!r}")
    return Recipe(str(raw.get("name") or path.stem), str(raw.get("description") or ""), values, steps, export, raw,
                  report=report)


def _is_set(path: Path, i: int, when: Any, values: dict[str, Any]) -> bool:
    """Whether step ``i``'s ``when:`` variable is set (anything but ``""``, ``[]`` or ``false``).

    Raises:
        RecipeError: when ``when`` does not name one of the recipe's variables.
    """
    if not isinstance(when, str) or when not in values:
        raise RecipeError(f"{path}: step {i} has when: {when!r}; it must name one of the recipe's variables: "
                          f"{', '.join(sorted(values)) or '(none)'}")
    value = values[when]
    return not (value is False or value == "" or value == [])


def shortfall_report(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Classes a ``balance`` target left short, with the rows each step lost of them.

    Returns:
        ``{class: {"missing": n, "source_step": step, "made": rows, "lost_by_step": {step: rows}}}``
        (empty when nothing is short).
    """
    short: dict[str, int] = {}
    for entry in manifest.get("steps", []):
        for per_class in (entry.get("info") or {}).get("shortfall", {}).values():
            for name, missing in per_class.items():
                short[name] = short.get(name, 0) + int(missing)
    report = {}
    steps = manifest.get("steps", [])
    for name, missing in short.items():
        losses = {}
        for before, after in pairwise(steps):
            lost = before.get("class_counts", {}).get(name, 0) - after.get("class_counts", {}).get(name, 0)
            if lost > 0:
                losses[after["step"]] = losses.get(after["step"], 0) + lost
        first = steps[0] if steps else {}
        report[name] = {"missing": missing, "source_step": first.get("step", ""),
                        "made": first.get("class_counts", {}).get(name, 0), "lost_by_step": losses}
    return report


def _write_build_report(recipe: Recipe, out: Path, state_dir: Path, done: list[str], *, seed: int,
                        name: str | None = None) -> None:
    """OUT/report.html of a finished build; the checkpoint before an ``upscale`` step gives the SR pairs."""
    from ferdata.report import REPORT_FILE, write_report

    names = [step.name for step, _ in recipe.steps]
    before = None
    if "upscale" in names and names.index("upscale") > 0:
        candidate = state_dir / done[names.index("upscale") - 1]
        before = candidate if (candidate / "dataset_dict.json").exists() else None
    result = write_report(out, out / REPORT_FILE, before=before, seed=seed, name=name)  # name: the final output's
    for warning in result.warnings:
        logger.warning("report: %s", warning)
    logger.info("report: %.1f MB in %.1fs -> %s", result.bytes / 1e6, result.seconds, out / REPORT_FILE)


def _state_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.build"


def _checkpoint_name(i: int, step: Step) -> str:
    return f"step-{i:02d}-{step.name}"


def _write_json_atomic(path: Path, value: Any) -> None:
    """Write JSON to a temporary sibling, flush it to disk, then rename it over ``path``."""
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_state(state_file: Path) -> dict[str, Any] | None:
    """The build state, or None (with a warning) when the file is unreadable, truncated or corrupt."""
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        logger.warning("the build state %s is unreadable or truncated (%s); starting over", state_file, e)
        return None
    if not isinstance(state, dict) or not isinstance(state.get("fingerprint"), str) \
            or not isinstance(state.get("done"), list) or not all(isinstance(d, str) for d in state["done"]):
        logger.warning("the build state %s is corrupt (not a fingerprint and a list of done steps); starting over",
                       state_file)
        return None
    return state


def _changed(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = [k for k in new if old.get(k) != new[k]]
    if not keys:
        return "settings"
    return ", ".join(f"{k} {old.get(k)!r} -> {new[k]!r}" if k in {"seed", "limit", "ferdata"} else k for k in keys)


def _link_or_copy_tree(src: Path, dst: Path) -> None:
    """Copy a finished checkpoint into ``dst`` by hard links (cheap; checkpoint files are never
    rewritten in place), falling back to a copy."""
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link, dirs_exist_ok=True)


def build(recipe: Recipe, out: str | Path, *, ctx: StepContext | None = None, overwrite: bool = False,
          strict: bool = False, engine: Engine | None = None) -> dict[str, Any]:
    """Run a recipe into ``out``, resuming from the last finished step of an interrupted run.

    Each step runs through ``engine`` (:mod:`ferdata.engines`: local by default, or Ray); the
    checkpoints, the resume and the output are the same whichever engine ran a step.

    When a ``balance`` target leaves classes short, ``ferdata.json`` gets a ``shortfall`` report
    (rows missing per class and the rows each step lost of them); with ``strict`` the build then
    fails without writing ``out`` (its checkpoints stay, so a rerun resumes).

    Returns:
        The final ``ferdata.json`` manifest (with per-step counts and timings).

    Raises:
        StepFailed: with ``strict`` when a class is short of its target.
    """
    from ferdata.commit import Chain, commit
    from ferdata.dataset import open_dataset, prepare_output, read_manifest

    ctx = ctx or StepContext()
    engine = engine or get_engine("local")
    out = prepare_output(Path(out), overwrite=overwrite)
    state_dir = _state_dir(out)
    state_file = state_dir / "state.json"
    settings = recipe.settings(ctx)
    fingerprint = recipe.fingerprint(ctx)
    done = _finished_steps(recipe, state_dir, fingerprint, settings)
    state_dir.mkdir(parents=True, exist_ok=True)
    ctx.out_dir = out
    if ctx.work_dir is None:
        ctx.work_dir = state_dir / "scratch"
    recipe_info = {"name": recipe.name, "description": recipe.description, "variables": recipe.variables}
    if done:
        last = state_dir / done[-1]
        data, chain = open_dataset(last), Chain.of(last)
    else:
        data, chain = None, Chain.start(seed=ctx.seed, recipe=recipe_info)
    start = time.perf_counter()
    for i, (step, config) in enumerate(recipe.steps):
        if i < len(done):
            continue
        step_line(i + 1, len(recipe.steps), step.name)
        ctx.ledger = chain.rejects
        result, entry = engine.run_step(step, data, config, ctx)
        chain.add(result, entry)
        name = _checkpoint_name(i, step)
        # overwrite: a run killed after this save but before the state update redoes the step
        commit(result.data, state_dir / name, chain, num_proc=ctx.num_proc, overwrite=True, files=result.files)
        # the step's own output goes now, not when the next step's replaces it: its in-memory columns and any
        # memory-mapped pages it read would otherwise stay resident through the next step (1.3 GB at 300k rows
        # when checkpoints were written through the memory map)
        del result
        gc.collect()
        done.append(name)
        _write_json_atomic(state_file, {"fingerprint": fingerprint, "settings": settings, "done": done})
        data = open_dataset(state_dir / name)  # continue from the checkpoint, as a resumed run would
    final = state_dir / done[-1]
    manifest = read_manifest(final)
    manifest["build_seconds"] = round(time.perf_counter() - start, 3)
    manifest["engine"] = engine.info()
    shortfall = shortfall_report(manifest)
    if shortfall:
        manifest["shortfall"] = shortfall
        if strict:
            detail = "; ".join(f"{name} short by {r['missing']}" for name, r in shortfall.items())
            raise StepFailed(f"--strict: {detail}; nothing written to {out} (see {final / 'ferdata.json'})")
    _assemble(recipe, out, final, manifest, state_dir, done, seed=ctx.seed)
    shutil.rmtree(state_dir, ignore_errors=True)
    return manifest


def _finished_steps(recipe: Recipe, state_dir: Path, fingerprint: str, settings: dict[str, Any]) -> list[str]:
    """The checkpoints an interrupted build with the same settings left (the longest finished prefix).

    Anything else in ``state_dir`` is cleared: another build's state, or leftovers of a step killed
    mid-save.
    """
    from ferdata.dataset import MANIFEST_FILE

    done: list[str] = []
    if not state_dir.exists():
        return done
    state_file = state_dir / "state.json"
    state = _read_state(state_file) if state_file.exists() else None
    if state is not None and state["fingerprint"] == fingerprint:
        expected = [_checkpoint_name(i, step) for i, (step, _) in enumerate(recipe.steps)]
        for i, name in enumerate(state["done"][: len(expected)]):  # the longest finished prefix
            if name != expected[i] or not (state_dir / name / MANIFEST_FILE).exists():
                break
            done.append(name)
        if done:
            logger.warning("resuming %s after step %d (%s)", recipe.name, len(done), done[-1])
    elif state is not None:
        logger.warning("the interrupted build of %s ran with other settings (%s); starting over", recipe.name,
                       _changed(state.get("settings") or {}, settings))
    if not done:
        shutil.rmtree(state_dir)
    else:  # leftovers of a step killed mid-save
        for stale in state_dir.glob(".*.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    return done


def _assemble(recipe: Recipe, out: Path, final: Path, manifest: dict[str, Any], state_dir: Path, done: list[str], *,
              seed: int) -> None:
    """Write ``out`` from the last checkpoint: its files, the final manifest, the Hub folder and the report.

    The output is assembled in a temporary sibling (hard links to the last checkpoint, which stays
    intact for a resume) and swapped into place; an existing ``out`` is replaced only by that rename.
    """
    from ferdata.dataset import MANIFEST_FILE, _json_default, atomic_dir

    with atomic_dir(out) as tmp:
        _link_or_copy_tree(final, tmp)
        (tmp / MANIFEST_FILE).unlink()  # a link to the checkpoint's file: never write through it
        with (tmp / MANIFEST_FILE).open("w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, default=_json_default)
        if recipe.export:
            from ferdata.hub import export

            # the card names the final output, never the temporary folder it is written in
            export(tmp, tmp / recipe.export, format=recipe.export, name=out.name, load_path=f"{out.name}/{recipe.export}")
        if recipe.report:
            _write_build_report(recipe, tmp, state_dir, done, seed=seed, name=out.name)
