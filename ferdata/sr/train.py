"""Train an ESPCN on high-resolution faces and export it for Keras and for OpenCV.

``train_espcn(HR_DIR, out=MODEL_DIR, config=EspcnTrainConfig(scale=4))`` writes into MODEL_DIR:

* ``model.keras``: the Keras model (custom layer registered, loads with ``keras.saving.load_model``);
* ``espcn_x{scale}.pb``: a frozen TensorFlow graph in OpenCV's ESPCN convention (one input
  placeholder ``input`` of shape ``(N, H, W, 1)``, the Y/gray channel in [0, 1]; output ``output``
  ``(N, H*s, W*s, 1)`` in [0, 1]), loadable by ``cv2.dnn_superres`` with ``setModel("espcn", s)``;
* ``metrics.json`` and ``model_card.md``: data, degradation, training settings, history and the
  held-out PSNR table against bicubic.

Training: random aligned LR/HR patch pairs from the ``train`` hash split (horizontal flips, except
for ``nearest`` / ``mix_nearest`` pairs: OpenCV nearest keeps the top-left pixel of each block, and a
mirrored pair would teach the opposite shift), each
LR made by one of the configured degradations (see :mod:`ferdata.sr.data`), MSE loss on [0, 1]
pixels, Adam with a cosine learning-rate decay, a PSNR callback on the ``validation`` split and
early stopping on it (best weights restored). The ``heldout`` split is only evaluated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferdata.errors import UsageError
from ferdata.sr.data import DEGRADATIONS, RANDOM, ROBUST_EVAL, crop_to_multiple, degrade_all, load_hr_folder, psnr, resize_stack
from ferdata.sr.model import SCALES, build_espcn

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)


@dataclass
class EspcnTrainConfig:
    """Options of ``ferdata train-espcn`` (defaults: the packaged x4 model's recipe)."""

    scale: int = 4
    filters: tuple[int, int] = (64, 32)
    activation: str = "relu"
    skip: bool = True
    #: degradations mixed in the training pairs, each optionally ``name:weight`` (one drawn per
    #: patch with probability proportional to its weight; default weight 1)
    degradations: tuple[str, ...] = ("area", "bicubic", "blur_jpeg")
    #: LR versions drawn per HR image for each random degradation (mix, blur_jpeg, ...)
    variants: int = 4
    #: side of an LR training patch (HR patch = patch * scale)
    patch: int = 24
    batch_size: int = 32
    steps_per_epoch: int = 250
    epochs: int = 40
    learning_rate: float = 2e-3
    #: cosine decay floor, as a fraction of the initial learning rate
    min_lr_fraction: float = 0.02
    #: epochs without validation-PSNR gain before stopping
    patience: int = 8
    seed: int = 0
    #: start from these weights (a packaged name such as espcn_x4, or a .pb / .keras path) instead
    #: of a random initialisation; the architecture must match
    init: str | None = None
    #: fixed degradations whose mean validation PSNR drives early stopping and the restored best
    #: epoch (``val_psnr``); empty = every row of the robustness table (before issue 27 always so).
    #: A model made for some inputs should be selected on those (e.g. area_jpeg75,area_jpeg50)
    validate_on: tuple[str, ...] = ()
    #: use at most this many training images (tests)
    limit: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise UsageError(f"scale must be one of {', '.join(map(str, SCALES))}, got {self.scale!r}")
        self.filters = tuple(int(f) for f in self.filters)  # type: ignore[assignment]
        if len(self.filters) != 2 or min(self.filters) < 1:
            raise UsageError(f"filters must be two positive integers, got {self.filters!r}")
        self.degradations = tuple(self.degradations)
        bad = [d for d in self.degradations if parse_degradation(d) is None]
        if bad or not self.degradations:
            raise UsageError(f"degradations must be among {', '.join(DEGRADATIONS)} (optionally NAME:WEIGHT with a "
                             f"positive weight), got {', '.join(bad) or '(none)'}")
        self.validate_on = tuple(self.validate_on)
        bad = [d for d in self.validate_on if d not in ROBUST_EVAL]
        if bad:
            raise UsageError(f"validate_on must be among {', '.join(ROBUST_EVAL)}, got {', '.join(bad)}")
        for name in ("patch", "batch_size", "steps_per_epoch", "epochs", "patience", "variants"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0 < self.learning_rate < 1:
            raise UsageError(f"learning_rate must be in (0, 1), got {self.learning_rate!r}")


def parse_degradation(text: str) -> tuple[str, float] | None:
    """``"mix:3"`` -> ``("mix", 3.0)``; ``"area"`` -> ``("area", 1.0)``; ``None`` when not valid.

    Example:
        >>> parse_degradation("mix:3")
        ('mix', 3.0)
    """
    name, _, weight = text.strip().partition(":")
    try:
        w = float(weight) if weight else 1.0
    except ValueError:
        return None
    return (name, w) if name in DEGRADATIONS and w > 0 else None


def make_training_lr(hr: np.ndarray, scale: int, degradations: tuple[str, ...], *, variants: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The LR stacks of the training set: one per fixed degradation, ``variants`` per random one.

    Returns:
        ``(D, N, h, w)`` uint8 stacks, the draw probability of each stack and its degradation name.
    """
    stacks, weights, names = [], [], []
    for k, text in enumerate(degradations):
        parsed = parse_degradation(text)
        if parsed is None:
            raise UsageError(f"bad degradation {text!r}")
        name, w = parsed
        draws = variants if name in RANDOM else 1
        for v in range(draws):
            stacks.append(degrade_all(hr, scale, name, seed=seed + 1000 * k + v))
            weights.append(w / draws)
            names.append(name)
    p = np.asarray(weights, np.float64)
    return np.stack(stacks), p / p.sum(), names


#: degradations whose LR/HR pairs are not mirrored in training (not mirror-symmetric sampling)
UNFLIPPABLE = ("nearest", "mix_nearest")


class PatchSampler:
    """Random aligned (LR, HR) patch batches from in-memory image stacks (seeded, reproducible).

    Args:
        lr: ``(D, N, h, w)`` uint8 LR stacks, one per degradation (draw).
        hr: ``(N, h*scale, w*scale)`` uint8 HR stack.
        scale: the upscale factor.
        patch: LR patch side.
        batch_size: patches per batch.
        seed: random seed.
        weights: draw probability of each LR stack (default: uniform).
        flippable: per LR stack, whether a mirrored pair stays aligned (default: all); False for
            OpenCV nearest, whose sampling is not mirror-symmetric (:data:`UNFLIPPABLE`).
    """

    def __init__(self, lr: np.ndarray, hr: np.ndarray, *, scale: int, patch: int, batch_size: int, seed: int,
                 weights: np.ndarray | None = None, flippable: np.ndarray | None = None) -> None:
        if patch > min(lr.shape[-2:]):
            raise UsageError(f"patch {patch} is larger than the LR images {lr.shape[-2:]}")
        self.lr, self.hr, self.scale, self.patch, self.batch_size = lr, hr, scale, patch, batch_size
        self.rng = np.random.default_rng(seed)
        self.weights = None if weights is None else np.asarray(weights, np.float64) / np.sum(weights)
        self.flippable = np.ones(len(lr), bool) if flippable is None else np.asarray(flippable, bool)

    def batch(self) -> tuple[np.ndarray, np.ndarray]:
        """One batch of float32 ``(B, p, p, 1)`` LR and ``(B, p*s, p*s, 1)`` HR patches in [0, 1]."""
        d, n, h, w = self.lr.shape
        p, s, b = self.patch, self.scale, self.batch_size
        rng = self.rng
        di = rng.choice(d, size=b, p=self.weights) if self.weights is not None else rng.integers(0, d, b)
        ni = rng.integers(0, n, b)
        ys, xs, flips = rng.integers(0, h - p + 1, b), rng.integers(0, w - p + 1, b), rng.random(b) < 0.5
        flips &= self.flippable[di]
        lr = np.empty((b, p, p), np.uint8)
        hr = np.empty((b, p * s, p * s), np.uint8)
        for k in range(b):
            lo = self.lr[di[k], ni[k], ys[k]:ys[k] + p, xs[k]:xs[k] + p]
            hi = self.hr[ni[k], ys[k] * s:(ys[k] + p) * s, xs[k] * s:(xs[k] + p) * s]
            lr[k], hr[k] = (lo[:, ::-1], hi[:, ::-1]) if flips[k] else (lo, hi)
        return lr[..., None].astype(np.float32) / 255.0, hr[..., None].astype(np.float32) / 255.0

    def dataset(self) -> Any:
        """An endless ``tf.data.Dataset`` of batches."""
        import tensorflow as tf

        p, s = self.patch, self.scale

        def gen() -> Any:
            while True:
                yield self.batch()

        spec = (tf.TensorSpec((None, p, p, 1), tf.float32), tf.TensorSpec((None, p * s, p * s, 1), tf.float32))
        return tf.data.Dataset.from_generator(gen, output_signature=spec).prefetch(2)


def predict_images(model: Any, lr: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """Run a model over a uint8 ``(N, h, w)`` stack; return uint8 ``(N, h*s, w*s)``."""
    out = []
    for i in range(0, len(lr), batch_size):
        x = lr[i:i + batch_size, :, :, None].astype(np.float32) / 255.0
        y = np.asarray(model(x, training=False))[..., 0]
        out.append(np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8))
    return np.concatenate(out)


def _psnr_callback_class() -> type:
    import keras

    class PSNRCallback(keras.callbacks.Callback):
        """Log ``val_psnr`` (mean dB over the given LR/HR pairs) and its gain over bicubic after each epoch.

        Args:
            lr_sets: name -> uint8 ``(N, h, w)`` LR stack (e.g. one per degradation).
            hr: uint8 ``(N, H, W)`` HR stack shared by the LR sets.
            monitor: the names whose mean PSNR is ``val_psnr`` (default: all of ``lr_sets``).
        """

        def __init__(self, lr_sets: dict[str, np.ndarray], hr: np.ndarray, monitor: tuple[str, ...] = ()) -> None:
            super().__init__()
            self.lr_sets, self.hr = lr_sets, hr
            self.monitor = tuple(monitor) or tuple(lr_sets)
            size = (hr.shape[2], hr.shape[1])
            self.baseline = {k: psnr(hr, resize_stack(v, size)) for k, v in lr_sets.items()}

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if logs is None:
                return
            gains = {k: psnr(self.hr, predict_images(self.model, v)) - self.baseline[k] for k, v in self.lr_sets.items()}
            logs["val_psnr"] = float(np.mean([self.baseline[k] + gains[k] for k in self.monitor]))
            for k, g in gains.items():
                logs[f"val_gain_{k}"] = float(g)
            logger.info("epoch %d: val_psnr %.3f dB, gains over bicubic %s", epoch + 1, logs["val_psnr"],
                        {k: round(g, 3) for k, g in gains.items()})

    return PSNRCallback


def PSNRCallback(lr_sets: dict[str, np.ndarray], hr: np.ndarray, monitor: tuple[str, ...] = ()) -> Any:  # noqa: N802
    """Build the PSNR callback (a ``keras.callbacks.Callback``; Keras is imported lazily).

    Example:
        >>> cb = PSNRCallback({"area": lr_area}, hr)   # doctest: +SKIP
    """
    return _psnr_callback_class()(lr_sets, hr, monitor)


def export_frozen_graph(model: keras.Model, path: str | Path) -> Path:
    """Write ``model`` as a frozen TF graph in OpenCV's ESPCN convention (see the module docstring).

    The graph is rebuilt from the model's weights with plain TF ops (Conv2D, BiasAdd, Relu/Tanh,
    AddV2, DepthToSpace) so OpenCV's TensorFlow importer reads it; every constant is stored as raw
    tensor content (OpenCV rejects TF's compact form for all-equal tensors).
    """
    import tensorflow as tf
    from tensorflow.python.framework import tensor_util
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    weights = {layer.name: [tf.constant(w) for w in layer.get_weights()] for layer in model.layers if layer.get_weights()}
    act = {"relu": tf.nn.relu, "tanh": tf.nn.tanh}[model.get_layer("conv1").get_config()["activation"]]
    scale = int(model.get_layer("depth_to_space").block_size)

    def conv(x: Any, name: str) -> Any:
        kernel, bias = weights[name]
        return tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "SAME"), bias)

    def forward(x: Any) -> Any:
        h = conv(act(conv(act(conv(x, "conv1")), "conv2")), "conv3")
        if "skip" in weights:
            h = tf.add(h, conv(x, "skip"))
        return tf.identity(tf.nn.depth_to_space(h, scale), name="output")

    concrete = tf.function(forward).get_concrete_function(tf.TensorSpec([None, None, None, 1], tf.float32, name="input"))
    graph_def = convert_variables_to_constants_v2(concrete).graph.as_graph_def()
    for node in graph_def.node:
        if node.op == "Const":
            tensor = node.attr["value"].tensor
            array = tensor_util.MakeNdarray(tensor)
            for name in ("float_val", "int_val", "int64_val", "double_val"):
                tensor.ClearField(name)
            tensor.tensor_content = array.tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(graph_def.SerializeToString())
    return path


def evaluate_model(model: Any, hr: np.ndarray, scale: int, *,
                   methods: tuple[str, ...] = ROBUST_EVAL) -> dict[str, dict[str, float]]:
    """Held-out PSNR of ``model`` and of bicubic for each LR-making method (4-px border shaved).

    ``model`` is a Keras model or any callable on float ``(N, h, w, 1)`` batches in [0, 1].
    """
    hr = crop_to_multiple(hr, scale)
    size = (hr.shape[2], hr.shape[1])
    table = {}
    for method in methods:
        lr = degrade_all(hr, scale, method, seed=1)
        bicubic = psnr(hr, resize_stack(lr, size))
        ours = psnr(hr, predict_images(model, lr))
        table[method] = {"bicubic": round(bicubic, 3), "espcn": round(ours, 3), "gain": round(ours - bicubic, 3)}
    return table


def load_initial_weights(model: keras.Model, init: str) -> str:
    """Copy the weights of a packaged model name, an OpenCV-format ``.pb`` made by ferdata or a
    ``.keras`` file into ``model`` (same layers and shapes); return the file used.

    Raises:
        UsageError: for an unknown model or one whose layers do not match.
    """
    from ferdata.sr.upscaler import resolve_model

    _, path = resolve_model(init, int(model.get_layer("depth_to_space").block_size))
    names = [n for n in ("conv1", "conv2", "conv3", "skip") if any(layer.name == n for layer in model.layers)]
    if path.suffix.lower() == ".keras":
        import keras

        from ferdata.sr.model import depth_to_space_layer

        depth_to_space_layer()
        source = keras.saving.load_model(path, compile=False)
        arrays = [w for n in names for w in source.get_layer(n).get_weights()]
    else:
        import tensorflow as tf
        from tensorflow.python.framework import tensor_util

        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString(path.read_bytes())
        # export_frozen_graph writes kernel, bias per convolution in the order conv1, conv2, conv3, skip
        arrays = [tensor_util.MakeNdarray(n.attr["value"].tensor) for n in graph_def.node
                  if n.op == "Const" and n.name.split("/")[-1] in ("filter", "bias")]
    target = [w for n in names for w in model.get_layer(n).get_weights()]
    if [a.shape for a in arrays] != [t.shape for t in target]:
        raise UsageError(f"--init {init}: its layers {[a.shape for a in arrays]} do not match the model being trained "
                         f"{[t.shape for t in target]} (same --scale, --filters and skip needed)")
    for k, n in enumerate(names):
        model.get_layer(n).set_weights(arrays[2 * k:2 * k + 2])
    return str(path)


def train_espcn(hr_dir: str | Path, *, out: str | Path, config: EspcnTrainConfig | None = None,
                overwrite: bool = False, verbose: bool = True) -> dict[str, Any]:
    """Train an ESPCN on a folder of HR gray faces and export it (see the module docstring).

    Args:
        hr_dir: folder of same-size HR images (e.g. ``../shared/data/faces-hr-144``).
        out: model directory to write.
        config: training options.
        overwrite: replace an existing ``out``.
        verbose: show Keras progress bars.

    Returns:
        The metrics written to ``metrics.json`` (held-out PSNR table, history, settings).

    Example:
        >>> train_espcn("faces-hr-144", out="espcn-x4", config=EspcnTrainConfig(scale=4))  # doctest: +SKIP
    """
    import keras

    from ferdata.errors import OutputExists

    config = config or EspcnTrainConfig()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputExists(f"output {out} already exists; pass --overwrite to replace it")
    s = config.scale
    keras.utils.set_random_seed(config.seed)
    names, hr_train = load_hr_folder(hr_dir, split="train", limit=config.limit)
    _, hr_val = load_hr_folder(hr_dir, split="validation", limit=None if config.limit is None else max(4, config.limit // 4))
    hr_train, hr_val = crop_to_multiple(hr_train, s), crop_to_multiple(hr_val, s)
    lr_train, weights, stack_names = make_training_lr(hr_train, s, config.degradations, variants=config.variants,
                                                      seed=config.seed)
    lr_val = {d: degrade_all(hr_val, s, d, seed=config.seed + 100) for d in ROBUST_EVAL}
    sampler = PatchSampler(lr_train, hr_train, scale=s, patch=min(config.patch, *lr_train.shape[-2:]),
                           batch_size=config.batch_size, seed=config.seed, weights=weights,
                           flippable=np.array([n not in UNFLIPPABLE for n in stack_names]))

    model = build_espcn(s, 1, config.filters, activation=config.activation, skip=config.skip)
    init_file = load_initial_weights(model, config.init) if config.init else None
    total = config.steps_per_epoch * config.epochs
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, total, alpha=config.min_lr_fraction)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="mse")
    callbacks = [
        PSNRCallback(lr_val, hr_val, config.validate_on),
        keras.callbacks.EarlyStopping(monitor="val_psnr", mode="max", patience=config.patience, restore_best_weights=True),
    ]
    start = time.perf_counter()
    history = model.fit(sampler.dataset(), steps_per_epoch=config.steps_per_epoch, epochs=config.epochs,
                        callbacks=callbacks, shuffle=False, verbose=2 if verbose else 0)
    seconds = time.perf_counter() - start

    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    pb = export_frozen_graph(model, out / f"espcn_x{s}.pb")
    _, hr_held = load_hr_folder(hr_dir, split="heldout")
    metrics = {
        "model": f"espcn_x{s}",
        "scale": s,
        "config": {k: v for k, v in asdict(config).items() if k != "extra"},
        "data": {"hr_dir": str(hr_dir), "train_images": len(names), "validation_images": len(hr_val),
                 "heldout_images": len(hr_held), "hr_size": list(hr_train.shape[1:])},
        "init_file": init_file,
        "init_sha256": hashlib.sha256(Path(init_file).read_bytes()).hexdigest() if init_file else None,
        "parameters": int(model.count_params()),
        "pb_bytes": pb.stat().st_size,
        "train_seconds": round(seconds, 1),
        "epochs_run": len(history.history.get("loss", [])),
        "history": {k: [round(float(x), 5) for x in v] for k, v in history.history.items()},
        "heldout": evaluate_model(model, hr_held, s),
        **config.extra,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "model_card.md").write_text(model_card(metrics))
    return metrics


def model_card(metrics: dict[str, Any]) -> str:
    """A Markdown model card from the metrics of a training run."""
    c, d, s = metrics["config"], metrics["data"], metrics["scale"]
    rows = "\n".join(f"| {m} | {v['bicubic']:.2f} | {v['espcn']:.2f} | {v['gain']:+.2f} |"
                     for m, v in metrics["heldout"].items())
    command = metrics.get("command") or (
        f"ferdata train-espcn {d['hr_dir']} --scale {s} --out MODEL_DIR --epochs {c['epochs']} "
        f"--steps-per-epoch {c['steps_per_epoch']} --patch {c['patch']} --batch-size {c['batch_size']} "
        f"--lr {c['learning_rate']} --filters {c['filters'][0]},{c['filters'][1]} --degradations {','.join(c['degradations'])}"
        + (f" --init {c['init']}" if c.get("init") else "")
        + (f" --validate-on {','.join(c['validate_on'])}" if c.get("validate_on") else ""))
    skip = ", plus a linear 5x5 input-to-output skip convolution" if c["skip"] else ""
    validated = ", ".join(c.get("validate_on") or ["every fixed degradation"])
    init = (f"\n- **Initial weights**: `{c['init']}` (fine-tuned from it; sha256 {metrics.get('init_sha256', '')[:16]}...)."
            if c.get("init") else "")
    return f"""# {metrics['model']}: ESPCN x{s} trained on faces (ferdata)

Gray / Y-channel super-resolution by sub-pixel convolution (Shi et al. 2016), 5-3-3 layout with
{c['filters'][0]} and {c['filters'][1]} filters ({c['activation']}){skip};
{metrics['parameters']:,} parameters, frozen graph {metrics['pb_bytes']:,} bytes.

- **Command**: `{command}`
- **Data**: `{d['hr_dir']}` ({d['hr_size'][0]}x{d['hr_size'][1]} gray faces); split by person (sha256 of the name
  in the file name): {d['train_images']} train, {d['validation_images']} validation (early stopping),
  {d['heldout_images']} held out (evaluation only, never trained on).
- **Degradation**: LR made per patch by one of {', '.join(c['degradations'])} (see `ferdata.sr.data`;
  {c.get('variants', 1)} draws per image of each random one).{init}
- **Training**: {c['patch']}x{c['patch']} LR patches, batch {c['batch_size']}, {c['steps_per_epoch']} steps x up to
  {c['epochs']} epochs ({metrics['epochs_run']} run, {metrics['train_seconds']:.0f} s), Adam lr {c['learning_rate']}
  cosine-decayed to x{c['min_lr_fraction']}, MSE on [0, 1],
  early stopping on validation PSNR (patience {c['patience']}; mean over {validated}), seed {c['seed']}.
- **OpenCV**: `sr = cv2.dnn_superres.DnnSuperResImpl_create(); sr.readModel("espcn_x{s}.pb"); sr.setModel("espcn", {s})`.

## Held-out PSNR (dB, gray, 4-px border shaved)

| LR made by | bicubic | ESPCN | gain |
|---|---|---|---|
{rows}
"""
