"""The demo's last mile: publish its dataset to a loopback Hub and read it back with ``import hub``.

:func:`hub_round_trip` starts :class:`~ferdata.demo.hub_server.LoopbackHub` on 127.0.0.1 (its
repositories and the client's download cache in the demo's temporary folder), points
``huggingface_hub`` and ``datasets`` at it, and runs what a user runs against the real Hub:

1. the repository is created with a card that says it is a demo, as a user would write one on the
   Hub (text outside ferdata's card markers);
2. :func:`ferdata.hub.push` publishes the dataset directory in one commit; the card merge keeps that note;
3. the ``import_hub`` step (``ferdata import hub REPO --out OUT/from-hub``) downloads it through the
   client and writes a dataset directory, each row's id checked against its pixels.

The ids read back are compared with the ids pushed, split by split and in order. The Hub stops
with the demo; nothing is written outside the temporary folder and ``OUT``. The demo's own
token is the only one the loopback Hub sees (``HF_TOKEN`` is set to it for the block).

Example:
    >>> trip = hub_round_trip(Path("ferdata-demo"), Path(tmp))     # doctest: +SKIP
    >>> trip.line()                                                 # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The loopback Hub repository the demo publishes to (it ends with the demo).
DEMO_REPO = "ferdata/btfer-demo"
#: The folder inside ``--out`` that ``import hub`` writes.
FROM_HUB = "from-hub"

_HUB_NOTE = ("> **A demo dataset made by `ferdata demo`**, pushed to a loopback Hub on 127.0.0.1 that ended "
             "with the demo. One person's face; the labels are the search queries'. Do not train or evaluate on it.")


@dataclass
class HubRoundTrip:
    """What the demo pushed to the loopback Hub and what ``import hub`` read back."""

    repo_id: str
    commit: str
    #: files of the push's commit (``README.md``, ``data/*.parquet``)
    files: list[str]
    rows_pushed: int
    rows_back: int
    #: the ids read back equal the ids pushed, split by split and in order
    ids_equal: bool
    #: the dataset directory ``import hub`` wrote (``OUT/from-hub``)
    out: Path
    #: the card merge kept the demo note the repository was created with
    note_kept: bool

    def line(self) -> str:
        """One summary line: what was pushed where, and what came back."""
        shards = sum(f.endswith(".parquet") for f in self.files)
        verdict = "the same ids in the same order" if self.ids_equal else "IDS DIFFER from those pushed"
        return (f"hub: pushed {self.rows_pushed} rows (card + {shards} parquet shard{'s' if shards != 1 else ''}) to "
                f"the loopback Hub as {self.repo_id} (commit {self.commit[:12]}); ferdata import hub read back "
                f"{self.rows_back} rows, {verdict} -> {self.out}")


@contextlib.contextmanager
def _hub_token(token: str) -> Iterator[None]:
    """``HF_TOKEN`` set to ``token`` for the block (a user's own token never goes to the loopback Hub);
    ``huggingface_hub``'s progress bars off (ferdata prints its own)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    saved, bars_off = os.environ.get("HF_TOKEN"), are_progress_bars_disabled()
    os.environ["HF_TOKEN"] = token
    disable_progress_bars()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("HF_TOKEN", None)
        else:
            os.environ["HF_TOKEN"] = saved
        if not bars_off:
            enable_progress_bars()


def _create_with_note(url: str, token: str) -> None:
    """The repository, created with a card of the user's own text around ferdata's (empty) markers."""
    from huggingface_hub import HfApi

    from ferdata.hub import BODY_BEGIN, BODY_END, CARD_FILE

    api = HfApi(endpoint=url, token=token)
    api.create_repo(DEMO_REPO, repo_type="dataset")
    card = f"---\npretty_name: ferdata demo\n---\n\n{_HUB_NOTE}\n\n{BODY_BEGIN}\n{BODY_END}\n"
    api.upload_file(path_or_fileobj=card.encode(), path_in_repo=CARD_FILE, repo_id=DEMO_REPO, repo_type="dataset",
                    commit_message="a note: this is a demo")


def _ids(path: Path) -> dict[str, list[str]]:
    from ferdata.dataset import open_dataset

    return {split: list(ds["id"]) for split, ds in open_dataset(path).items()}


def hub_round_trip(out: Path, tmp: Path, *, num_proc: int = 1, seed: int = 0) -> HubRoundTrip:
    """Push ``out`` to a loopback Hub (state under ``tmp``) and import it back into ``out/from-hub``.

    Args:
        out: the demo's dataset directory.
        tmp: the demo's temporary folder: the Hub's repositories, the client's cache, scratch space.
        num_proc: worker processes for the import's id check.
        seed: the import's seed.

    Returns:
        A :class:`HubRoundTrip`.
    """
    from ferdata.demo.hub_server import LoopbackHub, pointed_at
    from ferdata.hub import push
    from ferdata.steps import StepContext, apply_step

    token = "hf_demo_" + secrets.token_hex(16)
    back = out / FROM_HUB
    with LoopbackHub(root=tmp / "hub", token=token) as hub, pointed_at(hub.url, cache_dir=tmp / "hf-cache"), \
            _hub_token(token):
        _create_with_note(hub.url, token)
        pushed = push(out, DEMO_REPO, token=token, endpoint=hub.url,
                      commit_message=f"ferdata demo: publish {out.name}")
        apply_step("import_hub", {"repo": DEMO_REPO}, out=back,
                   ctx=StepContext(num_proc=num_proc, seed=seed, work_dir=tmp / "import-scratch"))
        card = hub.files(DEMO_REPO).get("README.md", b"").decode("utf-8", "replace")
    sent, got = _ids(out), _ids(back)
    return HubRoundTrip(repo_id=DEMO_REPO, commit=pushed.commit, files=pushed.added,
                        rows_pushed=sum(map(len, sent.values())), rows_back=sum(map(len, got.values())),
                        ids_equal=sent == got, out=back, note_kept=_HUB_NOTE in card)


def manifest_entry(trip: HubRoundTrip) -> dict[str, Any]:
    """The round trip as the ``"hub"`` entry of the demo's ``ferdata.json`` ``"demo"`` block."""
    return {"repo": f"{trip.repo_id} on ferdata.demo.hub_server (127.0.0.1, ended with the demo)",
            "commit": trip.commit, "files": trip.files, "rows_pushed": trip.rows_pushed,
            "rows_read_back": trip.rows_back, "ids_equal": trip.ids_equal, "read_back_into": FROM_HUB,
            "card_note_kept": trip.note_kept}
