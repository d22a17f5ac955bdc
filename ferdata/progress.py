"""One progress and logging policy for the whole package.

Progress bars are ``tqdm.auto`` bars on stderr with a ``desc``; :func:`disable_progress_bars`
(or ``-q/--quiet`` on the CLI) turns them all off, Hugging Face ``datasets`` bars included.
Only the ``ferdata`` root logger is configured: WARNING by default, or the level named by the
``FERDATA_VERBOSITY`` environment variable, or :func:`set_verbosity`.

What a command prints (docs/cli-output.md):

* libraries stay quiet: :func:`quiet_libraries` (called on ``import ferdata``, so before anything
  of ferdata's imports TensorFlow, for library use and the CLI alike) hides TensorFlow's C++/absl
  start-up lines and its Python logging, and
  :func:`hf_bars` keeps Hugging Face's internal bars (``Saving the dataset``, ``Generating
  train split``, ``Creating parquet``) off; ``FERDATA_VERBOSITY=debug`` shows everything again;
* a recipe prints ``[i/N] step`` per step (:func:`step_line`) with one bar for the step's work,
  and a summary table at the end (:func:`summary_table`);
* training loops get one bar per run over epochs (:func:`epoch_bar`, a Keras callback);
* ``-q`` leaves only errors, warnings and the final one-line summary.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

_bars_disabled = False
_quiet = False
_root = logging.getLogger("ferdata")


def _configure_root() -> None:
    if _root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    _root.addHandler(handler)
    _root.propagate = False
    level = os.environ.get("FERDATA_VERBOSITY", "WARNING").upper()
    _root.setLevel(getattr(logging, level, logging.WARNING))


_configure_root()


def set_verbosity(level: int | str) -> None:
    """Set the level of the ``ferdata`` logger.

    Args:
        level: a ``logging`` level or its name (``"INFO"``, ``"debug"`` ...).

    Example:
        >>> set_verbosity("INFO")
    """
    if isinstance(level, str):
        level = getattr(logging, level.upper(), logging.WARNING)
    _root.setLevel(level)


def disable_progress_bars() -> None:
    """Turn every ferdata (and ``datasets``) progress bar off."""
    global _bars_disabled
    _bars_disabled = True
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


def enable_progress_bars() -> None:
    """Turn progress bars back on."""
    global _bars_disabled
    _bars_disabled = False
    try:
        import datasets

        datasets.enable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


def set_quiet(quiet: bool) -> None:
    """``-q``: no bars, no step lines, no tables; only warnings, errors and the final summary.

    Example:
        >>> set_quiet(False)
    """
    global _quiet
    _quiet = quiet
    if quiet:
        disable_progress_bars()


def is_quiet() -> bool:
    """True under ``-q`` (:func:`set_quiet`)."""
    return _quiet


def progress_bars_disabled() -> bool:
    """Return True when progress bars are off."""
    return _bars_disabled


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Wrap a long loop in a tqdm bar on stderr (or nothing when bars are off).

    Example:
        >>> for _ in progress(range(3), desc="demo"):
        ...     pass
    """
    if _bars_disabled:
        yield from iterable
        return
    from tqdm.auto import tqdm

    yield from tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True)


# ---------------------------------------------------------------- quiet libraries


def debug_mode() -> bool:
    """True when ``FERDATA_VERBOSITY=debug`` asks for every library's output."""
    return os.environ.get("FERDATA_VERBOSITY", "").lower() == "debug"


@contextlib.contextmanager
def _fd2_silenced() -> Iterator[None]:
    """Send file descriptor 2 (C/C++ stderr) to /dev/null for the duration; Python errors still raise."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _QuietLoader(importlib.abc.Loader):
    """Runs TensorFlow's ``__init__`` (and its device discovery) with C++ stderr silenced.

    TensorFlow >= 2.16 writes ``I0000 ... oneDNN custom operations are on``, ``cudart_stub``,
    ``cuInit`` and the absl "before InitializeLog" warning straight to fd 2 while it loads, before
    ``TF_CPP_MIN_LOG_LEVEL`` applies; afterwards that variable filters the rest.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package ...: the real loader's
        return getattr(self.loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        with _fd2_silenced():
            self.loader.exec_module(module)
            try:
                module.config.list_physical_devices()  # cuInit and friends, here rather than mid-bar
            except Exception:  # pragma: no cover - a broken driver is reported by the first real use
                pass
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        _quiet_absl()


def _quiet_absl() -> None:
    """absl's Python logging at ERROR, when absl is loaded (TensorFlow loads it)."""
    absl_logging = sys.modules.get("absl.logging")
    if absl_logging is not None:
        absl_logging.set_verbosity(absl_logging.ERROR)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        # stays installed: datasets.config's find_spec("tensorflow") probe must not use it up
        if name != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_libraries() -> None:
    """Silence TensorFlow/absl start-up logging before TensorFlow is imported (no-op in debug mode).

    Sets ``TF_CPP_MIN_LOG_LEVEL=3`` and ``GRPC_VERBOSITY=ERROR`` unless they are already set,
    lowers the ``tensorflow`` and ``absl`` Python loggers to ERROR, and arranges for the first
    ``import tensorflow`` to run with C++ stderr silenced. ``import ferdata`` calls it (so library
    use is as quiet as the CLI), and so does the CLI. ``FERDATA_VERBOSITY=debug`` leaves every
    library as it is.

    Example:
        >>> quiet_libraries()
    """
    if debug_mode():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _quiet_absl()  # now if absl is loaded; else when TensorFlow loads it (_QuietLoader), so `import ferdata` stays light
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())


@contextlib.contextmanager
def hf_bars(enabled: bool) -> Iterator[None]:
    """Turn Hugging Face ``datasets``' own bars on or off inside the block (restored after).

    ferdata keeps them off around its bookkeeping (saving, exporting, generating a source) and on
    only for a step's own ``Dataset.map`` (``desc="crop test"``): that map is the step's one bar.
    They stay off whenever ferdata's bars are off (``-q``).

    Example:
        >>> with hf_bars(False):
        ...     pass
    """
    import datasets
    from datasets.utils import logging as hf_logging
    from datasets.utils.tqdm import are_progress_bars_disabled

    was_off = are_progress_bars_disabled()
    want = enabled and not _bars_disabled
    if not debug_mode():
        hf_logging.set_verbosity_error()
    if want:
        datasets.enable_progress_bars()
    else:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_off:
            datasets.disable_progress_bars()
        else:
            datasets.enable_progress_bars()


# ---------------------------------------------------------------- what ferdata prints


def step_line(index: int, total: int, name: str, detail: str = "") -> None:
    """Print ``[i/N] name`` on stderr before a recipe step (nothing under ``-q``).

    Example:
        >>> step_line(1, 7, "crawl")
    """
    if _bars_disabled or _quiet:
        return
    sys.stderr.write(f"[{index}/{total}] {name}{f' ({detail})' if detail else ''}\n")
    sys.stderr.flush()


def summary_table(steps: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table of a run's steps: kept, rejected, seconds, rejected by reason.

    Args:
        steps: ``ferdata.json`` step entries (``step``, ``kept``, ``rejected``, ``seconds``,
            ``rejected_by_reason``).

    Example:
        >>> print(summary_table([{"step": "crawl", "kept": 63, "rejected": 2, "seconds": 8.04,
        ...                       "rejected_by_reason": {"http_404": 2}}]))
        step   kept  rejected  seconds  rejected by reason
        crawl    63         2      8.0  http_404 2
    """
    rows = [("step", "kept", "rejected", "seconds", "rejected by reason")]
    for e in steps:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted((e.get("rejected_by_reason") or {}).items(),
                                                         key=lambda kv: (-kv[1], kv[0])))
        rows.append((str(e.get("step", "")), str(e.get("kept", "")), str(e.get("rejected", "")),
                     f"{float(e.get('seconds') or 0):.1f}", reasons))
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"{r[0]:<{width[0]}}  {r[1]:>{width[1]}}  {r[2]:>{width[2]}}  {r[3]:>{width[3]}}  {r[4]}".rstrip()
             for r in rows]
    return "\n".join(lines)


def epoch_bar(epochs: int, *, desc: str = "train", metrics: Sequence[str] = ("loss", "accuracy", "val_accuracy"),
              initial_epoch: int = 0) -> Any:
    """A Keras callback that shows one tqdm bar over epochs, with the latest metrics as postfix.

    Use it with ``model.fit(..., verbose=0, callbacks=[epoch_bar(epochs)])``; under ``-q`` it is a
    callback that shows nothing. TensorFlow/Keras are imported only when this is called.

    Example:
        >>> cb = epoch_bar(3, desc="train fer-cnn")    # doctest: +SKIP
    """
    import keras

    class EpochBar(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.bar: Any = None

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            if not _bars_disabled:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=epochs, initial=initial_epoch, desc=desc, unit="epoch", file=sys.stderr,
                                dynamic_ncols=True)

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if self.bar is not None:
                logs = logs or {}
                self.bar.set_postfix({m: f"{logs[m]:.4f}" for m in metrics if m in logs}, refresh=False)
                self.bar.update(1)

        def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return EpochBar()


def library_bars_off() -> None:
    """Turn Hugging Face ``datasets``' bars off (ferdata's own stay); the CLI calls it per command.

    Steps turn them back on for their own ``Dataset.map`` (:func:`hf_bars`), so a command shows
    the step's bar and none of the bookkeeping bars. No-op in debug mode.
    """
    if debug_mode():
        return
    import datasets
    from datasets.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
