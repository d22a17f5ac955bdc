"""``ferdata demo``: the whole BTFER mission offline, on a fresh clone, in about a minute.

It starts ferdata's local search engine (:mod:`ferdata.demo.search_server`, 127.0.0.1 only) with face
photos made from scikit-image's public-domain samples and every hostile answer a real crawl meets
(404, 500, a redirect loop, HTML served as a JPEG, a 50 GB Content-Length, an endless body, a
truncated JPEG, a decompression bomb, a photo without a face, a group photo, a duplicate under a
second URL), then runs the **real** ``btfer`` recipe (``pipelines/btfer.yaml``: crawl -> dedupe
-> MTCNN crop -> quality -> review exclusions -> split -> balance -> Hub export) against it
with ``--engine loopback``. Then it publishes the result as ``ferdata push`` does, to a loopback
Hugging Face Hub (:mod:`ferdata.demo.hub_server`, 127.0.0.1, ended with the demo), and reads it back
with ``import hub`` into ``OUT/from-hub/``, checking that the ids read back are the ids pushed
(:mod:`ferdata.demo.publish`). Afterwards it writes the review contact sheets (``OUT/review/``: the
demo writes nothing outside ``OUT``) and, when :mod:`ferdata.report` is installed, the HTML report,
and says what to run on real data.

The only differences from ``ferdata build btfer --engine loopback ...``: the crawl's fetch
cache lives in a temporary directory (each demo server has a new port, so cached URLs could never
be reused; the loopback Hub's repositories and download cache live there too), ``ferdata.json``
gets ``"demo": {...}`` and the dataset card says it is a demo (its load line names ``OUT/hub``). All
faces are one person (the astronaut); the labels are the search queries', as in a real crawl
before review. Nothing from ``../shared/data`` is used.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferdata.errors import FerdataError, UsageError

if TYPE_CHECKING:
    from ferdata.demo.publish import HubRoundTrip

#: What the user runs next, on real data (printed at the end of the demo).
NEXT_STEPS = """\
Next, on real data:
  ferdata build fer2013-improved --source fer2013.csv --out fer2013-224
      fer2013.csv: Kaggle, "Challenges in Representation Learning: Facial Expression Recognition Challenge"
      (https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-recognition-challenge/data)
  ferdata import fer2013 fer2013.csv --ferplus fer2013new.csv --out fer2013-ferplus
      fer2013new.csv: FER+ labels, https://github.com/microsoft/FERPlus
  ferdata build btfer --per-class 300 --out btfer        (the same recipe on Bing, paper 001's 7 x 300)
  ferdata train fer2013-224 --model shallow-cnn --out runs/fer"""

DEMO_NOTE = ("**This is a demo dataset made by `ferdata demo`**: {rows} face crops of one person (scikit-image's "
             "public-domain `astronaut`, NASA) re-toned and pasted on generated backgrounds, crawled from ferdata's "
             "local test search engine on 127.0.0.1 by the real `btfer` recipe. Its labels are the search queries', "
             "not expressions: do not train or evaluate on it. It shows what `ferdata build btfer` produces.")


@dataclass
class DemoResult:
    """What :func:`run_demo` made."""

    out: Path
    manifest: dict[str, Any]
    seconds: float
    review_dir: Path | None = None
    report: Path | None = None
    #: the push to the loopback Hub and the ``import hub`` back (None when skipped)
    hub: HubRoundTrip | None = None
    notes: list[str] = field(default_factory=list)

    def summary_line(self) -> str:
        """The closing lines: the Hub round trip (when made), then the one-line summary, last."""
        steps = self.manifest["steps"]
        crawl = steps[0]
        candidates = crawl["kept"] + crawl["rejected"]
        rejected = sum(e["rejected"] for e in steps)
        rows = sum(self.manifest["splits"].values())
        last = (f"demo: {rows} faces {self.manifest['splits']} from {candidates} crawled candidates "
                f"({rejected} left out, each in the rejects ledger with its step and reason) in {self.seconds:.0f}s "
                f"-> {self.out}")
        return last if self.hub is None else f"{self.hub.line()}\n{last}"


def check_demo_dependencies() -> None:
    """Raise a one-line error naming the extra to install when the demo's photo source is missing."""
    import importlib.util

    if importlib.util.find_spec("skimage") is None:
        raise UsageError("ferdata demo makes its photos from scikit-image's public-domain samples; install it: "
                         "pip install 'ferdata[demo]' (pip install -e \".[dev]\" includes it)")


def run_demo(out: str | Path, *, per_class: int = 3, photos: int = 10, overwrite: bool = False, num_proc: int = 1,
             seed: int = 0, report: bool = True, hub: bool = True) -> DemoResult:
    """Run the ``btfer`` recipe against the local hostile search engine into ``out``.

    Args:
        out: the output dataset directory (must not exist unless ``overwrite``).
        per_class: faces per class in the final test split (the recipe's ``per_class``).
        photos: distinct face photos the engine serves per class (the crawl over-fetches 3x).
        overwrite: replace ``out``.
        num_proc: worker processes for per-image steps.
        seed: the recipe's seed.
        report: also write ``out/report.html`` when :mod:`ferdata.report` is installed.
        hub: also push to a loopback Hub and import it back into ``out/from-hub``.

    Returns:
        A :class:`DemoResult`.

    Raises:
        UsageError: for a bad value, an existing ``out``, or scikit-image missing.
        FerdataError: when the ids read back from the Hub are not the ids pushed.

    Example:
        >>> result = run_demo("ferdata-demo")      # doctest: +SKIP
        >>> result.summary_line()                  # doctest: +SKIP
    """
    from ferdata.dataset import prepare_output
    from ferdata.demo.publish import hub_round_trip, manifest_entry
    from ferdata.demo.search_server import btfer_demo_engine
    from ferdata.pipeline import build, load_recipe
    from ferdata.steps import StepContext

    if per_class < 1 or photos < 1:
        raise UsageError(f"--per-class and --photos must be at least 1, got {per_class} and {photos}")
    if photos < per_class:
        raise UsageError(f"--per-class {per_class} needs at least as many distinct photos per class; got --photos "
                         f"{photos} (use --photos {per_class} or more)")
    check_demo_dependencies()
    out = Path(out)
    prepare_output(out, overwrite=overwrite)  # fails early, before the server starts, when out exists
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ferdata-demo-") as tmp:
        with btfer_demo_engine(Path(tmp), per_class_photos=photos) as (server, queries):
            recipe = load_recipe("btfer", {"per_class": per_class, "engine": "loopback", "base_url": server.base_url,
                                           "queries": str(queries)})
            step, config = recipe.steps[0]
            recipe.steps[0] = (step, dataclasses.replace(config, cache=str(Path(tmp) / "fetch-cache")))
            build(recipe, out, ctx=StepContext(num_proc=num_proc, seed=seed), overwrite=overwrite)
        manifest = _mark_demo(out, photos)
        trip = hub_round_trip(out, Path(tmp), num_proc=num_proc, seed=seed) if hub else None
    if trip is not None:
        manifest["demo"]["hub"] = manifest_entry(trip)
        (out / "ferdata.json").write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
        if not trip.ids_equal:
            raise FerdataError(f"the demo's round trip through the loopback Hub lost or changed rows: {trip.line()}")
    result = DemoResult(out=out, manifest=manifest, seconds=0.0, hub=trip)
    result.review_dir = _write_review_inside(out)
    if report:
        built = out / "report.html"  # a recipe with `report: true` has written it already
        result.report = built if built.exists() else _maybe_report(out, result.notes)
    result.seconds = time.perf_counter() - start
    return result


def _mark_demo(out: Path, photos: int) -> dict[str, Any]:
    """``"demo"`` in ``ferdata.json`` and a card that says it is a demo (its load line: ``OUT/hub``)."""
    from ferdata.dataset import read_manifest
    from ferdata.hub import dataset_card

    manifest = read_manifest(out)
    manifest["demo"] = {"engine": "ferdata.demo.search_server on 127.0.0.1 (ended with the demo)",
                        "photos": "scikit-image astronaut (NASA, public domain) and coffee (public domain)",
                        "photos_per_class": photos, "note": "labels are search queries; not for training"}
    (out / "ferdata.json").write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    rows = sum(manifest["splits"].values())
    card = out / "hub" / "README.md"
    if card.exists():
        card.write_text(dataset_card(out, pretty_name="ferdata demo (btfer recipe, local search engine)",
                                     description=DEMO_NOTE.format(rows=rows), load_path=f"{out.name}/hub"),
                        encoding="utf-8")
    return manifest


def _write_review_inside(out: Path) -> Path:
    """The review sheets as ``OUT/review/``: the demo writes nothing outside its ``--out``.

    ``write_review`` refuses a folder inside the dataset it reviews (a user's dataset is an input there);
    the demo's dataset is its own output, so the sheets are written in a temporary folder and moved in.
    """
    import shutil

    from ferdata.review import write_review

    dest = out / "review"
    with tempfile.TemporaryDirectory(prefix="ferdata-demo-review-") as tmp:
        made = write_review(out, Path(tmp) / "review")
        shutil.rmtree(dest, ignore_errors=True)
        shutil.move(str(made), str(dest))
    return dest


def _maybe_report(out: Path, notes: list[str]) -> Path | None:
    """``ferdata.report.write_report`` when that module exists (it is optional here); else None."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("ferdata.report") is None:
        return None
    write_report = getattr(importlib.import_module("ferdata.report"), "write_report", None)
    if write_report is None:
        return None
    try:
        made = write_report(out, out / "report.html", title="ferdata demo: btfer on a local search engine")
    except Exception as e:  # the dataset is made; a report problem is said, not hidden
        notes.append(f"report not written: {type(e).__name__}: {e}")
        return None
    return Path(getattr(made, "path", out / "report.html"))
