"""Super-resolution: a face-trained ESPCN, its training, and batched upscaling.

* :func:`build_espcn` (``ferdata.sr.model``): the Keras model factory.
* :func:`train_espcn` (``ferdata.sr.train``): ``ferdata train-espcn``.
* :class:`Upscaler` (``ferdata.sr.upscaler``): ``Upscaler.load(name_or_path=None, scale=4).upscale(images, size=None)``.
* the ``upscale`` step (``ferdata.sr.step``): ``ferdata upscale --espcn IN --out DIR``.

Only light modules are imported here; TensorFlow and OpenCV load on first use.

Example:
    >>> from ferdata.sr import Upscaler
    >>> Upscaler.load().upscale(np.zeros((2, 48, 48), np.uint8), size=224).shape   # doctest: +SKIP
    (2, 224, 224)
"""

from __future__ import annotations

from ferdata.sr.model import build_espcn
from ferdata.sr.train import EspcnTrainConfig, train_espcn
from ferdata.sr.upscaler import Upscaler, packaged_models

__all__ = ["EspcnTrainConfig", "Upscaler", "build_espcn", "packaged_models", "train_espcn"]
