"""The verifier: is a candidate pair of near-duplicate hashes the same photograph?

:func:`verify_pairs` registers the *detail* of two images (image minus a Gaussian blur) by the
peak of their cross-correlation, trying small zooms for re-crops (``xcorr``; a pair best registered
at the largest of them is also tried at two larger, *extended* zooms, charged EXTENDED_ZOOM_PENALTY
when they win); at that registration
it then measures the photometric *residual* of the pixels (median absolute residual of a linear
brightness/contrast fit, in units of the image's contrast, on the central 32 x 32 px). Two prints
of one photograph leave almost nothing (~0.05-0.25: re-encoding, a caption or watermark moves few
pixels); two photographs of one person or of look-alikes leave ~0.15-0.7. The verdict score the
``dedupe`` step compares with its distance-dependent threshold is ``xcorr - residual`` (less the
penalty at an extended zoom);
docs/dedupe.md has the labelled tables (fer2013-train at dataset scale, fer2013-dev).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: verifiers: ``xcorr`` (register, then correlate the detail) or ``none`` (hash distance only)
VERIFIERS = ("xcorr", "none")
#: side of the gray square every image is compared at
VERIFY_SIZE = 48
#: zoom factors tried on either side (a 2-4 px re-crop of a 48 px face resized back is a 4-9 % zoom);
#: the last two (6-7 px cropped off) are *extended* zooms, tried only for a pair whose best registration
#: at the first three is the largest one (1.09 either way), and charged EXTENDED_ZOOM_PENALTY
VERIFY_ZOOMS = (1.0, 1.045, 1.09, 1.135, 1.18)
#: index in VERIFY_ZOOMS of the first extended zoom
EXTENDED_FROM = 3
#: subtracted from the verdict score of a pair registered at an extended zoom: more trials give a
#: look-alike more chances to fit (on the labelled fer2013-train pairs, re-crops registered there
#: score 0.60-0.83 and different people or other photos of one person 0.54-0.58 before the penalty:
#: docs/dedupe.md)
EXTENDED_ZOOM_PENALTY = 0.13
#: largest shift (pixels at VERIFY_SIZE) the registration looks for
VERIFY_MAX_SHIFT = 6
#: sigma (pixels) of the Gaussian blur subtracted to keep only the detail (the "high-pass" image)
VERIFY_SIGMA = 1.5
#: zoomed comparisons are only tried for pairs whose unzoomed score is at least this (a different
#: face scores ~0.1-0.4; every labelled same-photo pair but 2 of 208 and every synthetic 2-4 px
#: re-crop that needs a zoom scores at least this unzoomed: tests/benchmarks/bench_dedupe.py)
VERIFY_ZOOM_FLOOR = 0.35
#: half-side (px at VERIFY_SIZE) of the central square the residual is measured on (32 x 32 px:
#: the face, away from the border a shift or zoom reveals)
RESIDUAL_HALF = 16
#: residual given to a pair whose xcorr is below VERIFY_ZOOM_FLOOR (not measured: a different photo)
RESIDUAL_UNMEASURED = 1.0
#: pairs scored per batch: small enough for the batch's temporaries (~10 kB a pair) to stay in cache
#: (2048 was ~1.5x slower per pair, mostly first-touch page faults of the large temporaries)
_VERIFY_BATCH = 256
#: images per batch of the detail spectra (the same reason)
_SPECTRA_BATCH = 128
#: images per batch of :meth:`DetailSpectra.prepare` (one thread's share at a time)
_PREPARE_BATCH = 2048
_COMBOS = ((0, 1), (0, 2), (1, 0), (2, 0))  # (zoom index of a, zoom index of b) after (0, 0)
#: extended trials: (a's zoom index, b's) tried when the best of _COMBOS zooms a (b) by VERIFY_ZOOMS[2]
_EXTENDED_A = tuple((z, 0) for z in range(EXTENDED_FROM, len(VERIFY_ZOOMS)))
_EXTENDED_B = tuple((0, z) for z in range(EXTENDED_FROM, len(VERIFY_ZOOMS)))


def verify_array(pixels: np.ndarray) -> np.ndarray:
    """An image as the verifier sees it: gray ``VERIFY_SIZE`` x ``VERIFY_SIZE`` float32.

    Args:
        pixels: uint8 gray ``(H, W)``, RGB ``(H, W, 3)`` or RGBA array of any size.
    """
    return verify_array_u8(pixels).astype(np.float32)


def verify_array_u8(pixels: np.ndarray) -> np.ndarray:
    """:func:`verify_array`'s pixels as uint8 (the same values: a quarter of the memory)."""
    import cv2

    arr = np.asarray(pixels)
    if arr.ndim == 3:
        arr = cv2.cvtColor(np.ascontiguousarray(arr[..., :3], dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if arr.shape != (VERIFY_SIZE, VERIFY_SIZE):
        arr = cv2.resize(arr, (VERIFY_SIZE, VERIFY_SIZE), interpolation=cv2.INTER_AREA)
    return arr


def _zoom(img: np.ndarray, z: float) -> np.ndarray:
    """``img`` magnified by ``z`` about its centre (same size; the border is cut off)."""
    import cv2

    if z == 1.0:
        return img
    c = (VERIFY_SIZE - 1) / 2
    m = np.array([[z, 0, (1 - z) * c], [0, z, (1 - z) * c]], dtype=np.float32)
    return cv2.warpAffine(img, m, (VERIFY_SIZE, VERIFY_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _detail_spectra(images: np.ndarray) -> np.ndarray:
    """Spectra (``rfft2``) of the windowed, unit-energy detail of a stack of verifier images.

    Detail = the image minus its Gaussian blur (sigma VERIFY_SIGMA), times a Hann window (so
    circular shifts barely wrap), scaled to unit energy: the product of two spectra, transformed
    back, is then the normalised cross-correlation of the two details at every shift.
    """
    import scipy.fft

    if len(images) > _SPECTRA_BATCH:
        out = np.empty((len(images), VERIFY_SIZE, VERIFY_SIZE // 2 + 1), np.complex64)
        for lo in range(0, len(images), _SPECTRA_BATCH):
            out[lo:lo + _SPECTRA_BATCH] = _detail_spectra(images[lo:lo + _SPECTRA_BATCH])
        return out
    x = images.astype(np.float32)
    x = x - _blur(x)
    x *= _window()
    x -= x.mean(axis=(1, 2), keepdims=True)
    x /= np.sqrt((x * x).sum(axis=(1, 2), keepdims=True)) + 1e-6
    return scipy.fft.rfft2(x, workers=1)


def _blur(x: np.ndarray) -> np.ndarray:
    """Gaussian blur (sigma VERIFY_SIGMA, mirrored borders) of each image of a stack, in one OpenCV call.

    The images are padded by the kernel radius and stacked into one tall image, so the kernel
    never reaches from one image into the next.
    """
    import cv2

    pad = 6  # OpenCV's kernel radius for sigma 1.5 on float images: round(8 sigma + 1) | 1 = 13 taps
    n, h, w = x.shape
    tall = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), mode="symmetric").reshape(n * (h + 2 * pad), w + 2 * pad)
    out = cv2.GaussianBlur(tall, (2 * pad + 1, 2 * pad + 1), VERIFY_SIGMA, borderType=cv2.BORDER_REFLECT)
    return out.reshape(n, h + 2 * pad, w + 2 * pad)[:, pad:pad + h, pad:pad + w]


@functools.cache
def _window() -> np.ndarray:
    return np.outer(np.hanning(VERIFY_SIZE), np.hanning(VERIFY_SIZE)).astype(np.float32)


def _shifts() -> np.ndarray:
    """The shifts searched, in FFT order: 0..VERIFY_MAX_SHIFT, then size - VERIFY_MAX_SHIFT..size - 1."""
    return np.r_[0:VERIFY_MAX_SHIFT + 1, VERIFY_SIZE - VERIFY_MAX_SHIFT:VERIFY_SIZE]


@functools.cache
def _inverse_dft() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Matrices of the inverse real 2-D DFT restricted to the searched shifts.

    ``irfft2(P, s=(size, size))[y, x]`` for y, x in :func:`_shifts` equals
    ``Re((Ey @ P) @ Ex)[y, x]``: Ey (shifts x size) is the inverse DFT along the rows, Ex (half
    spectrum x shifts) the inverse real DFT along the columns (the Hermitian half counted twice,
    except the DC and Nyquist columns). Only the 13 x 13 shifts are computed instead of the
    48 x 48 surface, with two small matrix products per pair (BLAS) instead of an FFT.
    """
    size, shifts = VERIFY_SIZE, _shifts()
    ky, kx = np.arange(size), np.arange(size // 2 + 1)
    ey = (np.exp(2j * np.pi * np.outer(shifts, ky) / size) / size).astype(np.complex64)
    w = np.full(len(kx), 2.0)
    w[0] = 1.0
    if size % 2 == 0:
        w[-1] = 1.0
    ex = w[:, None] * np.exp(2j * np.pi * np.outer(kx, shifts) / size) / size
    return ey, np.ascontiguousarray(ex.real, dtype=np.float32), np.ascontiguousarray(ex.imag, dtype=np.float32)


def _correlate(fa: np.ndarray | tuple[np.ndarray, np.ndarray],
               fb: np.ndarray | tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Peak of the normalised cross-correlation within +-VERIFY_MAX_SHIFT, and its shift (dy, dx).

    ``fa`` and ``fb`` are stacks of spectra, or ``(store, positions)`` from
    :meth:`DetailSpectra.slots` (gathered into one buffer, without temporaries).
    """
    size, shifts = VERIFY_SIZE, _shifts()
    ey, exr, exi = _inverse_dft()
    if isinstance(fa, tuple):
        (da, sa), (db, sb) = fa, fb
        prod = np.take(da, sa, axis=0)
        other = np.take(db, sb, axis=0)
        np.conjugate(other, out=other)
        np.multiply(prod, other, out=prod)
    else:
        prod = fa * np.conj(fb)
    q = ey @ prod  # (pairs, shifts, half spectrum): inverse DFT along the rows
    window = (q.real @ exr - q.imag @ exi).reshape(len(q), -1)  # inverse real DFT along the columns
    peak = window.argmax(axis=1)
    dy, dx = shifts[peak // len(shifts)], shifts[peak % len(shifts)]
    return (window[np.arange(len(q)), peak].astype(np.float64), np.where(dy > size // 2, dy - size, dy),
            np.where(dx > size // 2, dx - size, dx))


# ---------------------------------------------------------------------------------------------
# a cheap, exact upper bound of the unzoomed detail correlation (prunes pairs below the floor)

#: half-width (frequency index) of the low band the bound correlates exactly: |ky| <= BOUND_BAND,
#: 0 <= kx <= BOUND_BAND (a third of the spectrum's coefficients, ~45-75 % of the detail energy)
BOUND_BAND = 16
#: added to the bound: the band is stored as float32's top 16 bits rounded to nearest (a relative
#: error <= 2**-8 a component, so <= 2 * 2**-8 + 2**-16 < 7.9e-3 on the band's correlation, which is
#: over at most the unit energy), plus float32 summation (< 1e-4); the rest is rounded up, so its sum
#: stays an upper bound without slack
_BOUND_SLACK = 8e-3


def _band_rows() -> np.ndarray:
    return np.r_[0:BOUND_BAND + 1, VERIFY_SIZE - BOUND_BAND:VERIFY_SIZE]


def _band_shape() -> tuple[int, int]:
    return len(_band_rows()), BOUND_BAND + 1


def _rest_size() -> int:
    rows, cols = _band_shape()
    return VERIFY_SIZE * (VERIFY_SIZE // 2 + 1) - rows * cols


@functools.cache
def _rest_mask() -> np.ndarray:
    """The coefficients of the half spectrum outside the band (True), row-major."""
    mask = np.ones((VERIFY_SIZE, VERIFY_SIZE // 2 + 1), dtype=bool)
    mask[np.ix_(_band_rows(), np.arange(BOUND_BAND + 1))] = False
    return mask


@functools.cache
def _column_weights() -> np.ndarray:
    """Weight of each half-spectrum column in the inverse real DFT: 1 for DC and Nyquist, else 2."""
    w = np.full(VERIFY_SIZE // 2 + 1, 2.0)
    w[0] = 1.0
    if VERIFY_SIZE % 2 == 0:
        w[-1] = 1.0
    return w


@functools.cache
def _band_dft() -> tuple[np.ndarray, np.ndarray]:
    """:func:`_inverse_dft` restricted to the band's rows and columns, as the bound applies it to
    ``X = conj(A) * B``: ``conj(Ey)`` (shifts x band rows), then ``Ex`` as one real matrix ``M``
    (2 x band columns, shifts) whose rows alternate ``Re Ex`` and ``Im Ex``, so that the window is
    ``Q.view(float32) @ M`` for ``Q = conj(Ey) @ X`` (``Re(conj(Q) Ex) = Re Q Re Ex + Im Q Im Ex``)."""
    ey, exr, exi = _inverse_dft()
    rows, cols = _band_rows(), np.arange(BOUND_BAND + 1)
    m = np.empty((2 * len(cols), exr.shape[1]), np.float32)
    m[0::2], m[1::2] = exr[cols], exi[cols]
    return np.ascontiguousarray(np.conj(ey[:, rows])), m


def _bound_parts(spectra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The band of each spectrum and the weighted magnitudes of the rest, as stored: float32's top 16
    bits (uint16; the band's real and imaginary parts side by side, rounded to nearest; the rest's
    magnitudes rounded up), 3.5 kB an image. :func:`_take_float32` reads them back.

    The rest is stored as ``sqrt(w) |F| / size``, so that the sum over the rest of a pair's
    products bounds the rest's part of the correlation at any shift (``|Re z| <= |z|``).
    """
    rows, cols = _band_rows(), np.arange(BOUND_BAND + 1)
    band = np.ascontiguousarray(spectra[:, rows][:, :, cols]).view(np.uint32)
    band = ((band + 0x7FFF + ((band >> 16) & 1)) >> 16).astype(np.uint16)  # to nearest, ties to even
    scale = (np.sqrt(_column_weights()) / VERIFY_SIZE).astype(np.float32)
    rest = np.ascontiguousarray((np.abs(spectra) * scale)[:, _rest_mask()], dtype=np.float32).view(np.uint32)
    return band, ((rest.astype(np.uint64) + 0xFFFF) >> 16).astype(np.uint16)  # up: magnitudes are >= 0


def _take_float32(store: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``store[positions]`` as float32 (the stored top 16 bits, the low 16 zero): two integer passes,
    several times faster than a float16 store's conversion, which cost more than the bound itself."""
    out = np.take(store, positions, axis=0).astype(np.uint32)
    out <<= 16  # in place: no second temporary of the gathered size
    return out.view(np.float32)


def _correlation_bound(spectra: DetailSpectra, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """An upper bound of each pair's unzoomed detail correlation (the ``xcorr`` of :func:`_correlate`).

    The correlation at a shift is a sum over the half spectrum (the inverse real DFT of the
    product of the two spectra). Over the low band (:data:`BOUND_BAND`) it is computed exactly at
    every shift searched; over the rest each term is at most the product of the two magnitudes,
    whatever the shift. Their sum bounds the peak: a pair whose bound stays below
    :data:`VERIFY_ZOOM_FLOOR` cannot reach it (about 95 % of the candidate pairs on fer2013-train),
    for a third of the work and memory traffic of the exact correlation.

    The candidate pairs come in runs of one ``i`` (the greedy's survivor with its candidates), so
    ``i``'s parts are read once a run and multiply ``j``'s in place; other orders gather both sides.
    """
    band, rest, pa = spectra.bound_parts(i)
    _, _, pb = spectra.bound_parts(j)  # the stores as allocated by either call
    eyc, m = _band_dft()
    n = len(pb)
    x = _take_float32(band, pb).view(np.complex64)  # (pairs, band rows, band columns): B, then conj(A) * B
    tail_b = _take_float32(rest, pb)
    starts = np.flatnonzero(np.diff(pa)) + 1
    runs = len(starts) < n // 8
    at = pa[np.r_[0, starts]] if runs else pa  # i's rows whose parts are read: once a run, or every pair's
    heads = _take_float32(band, at).view(np.complex64)
    np.conjugate(heads, out=heads)
    tail_a = _take_float32(rest, at)
    if runs:
        tail = np.empty(n, np.float32)
        for k, (a, b) in enumerate(zip(np.r_[0, starts].tolist(), np.r_[starts, n].tolist(), strict=True)):
            np.multiply(x[a:b], heads[k], out=x[a:b])
            np.matmul(tail_b[a:b], tail_a[k], out=tail[a:b])
    else:
        np.multiply(x, heads, out=x)
        tail = np.einsum("ij,ij->i", tail_a, tail_b)
    q = eyc @ x  # (pairs, shifts, band columns)
    window = (q.view(np.float32).reshape(-1, len(m)) @ m).reshape(n, -1).max(axis=1)
    return window.astype(np.float64) + tail + _BOUND_SLACK


@dataclass
class VerifyResult:
    """Scores of a batch of pairs (arrays aligned with the pairs)."""

    #: the verdict score: ``xcorr - residual``, less EXTENDED_ZOOM_PENALTY for a pair registered at an
    #: extended zoom (-2..1)
    score: np.ndarray
    #: normalised correlation of the registered details, -1..1
    xcorr: np.ndarray
    #: median absolute residual of the registered pixels after a linear brightness/contrast fit,
    #: in units of b's standard deviation (RESIDUAL_UNMEASURED below VERIFY_ZOOM_FLOOR)
    residual: np.ndarray
    #: zoom of a over b of the best registration (>1: a is the tighter crop)
    zoom: np.ndarray
    #: shift (pixels at VERIFY_SIZE) of b onto a
    dy: np.ndarray
    dx: np.ndarray


class DetailSpectra:
    """Verifier images with their detail spectra, each computed once per image and zoom while cached.

    :func:`verify_pairs` accepts this in place of a list of images: a caller that scores many
    batches of pairs over the same rows (the dedupe step) pays the blur, window and FFT of an
    image once, not once per pair or batch. Spectra are computed lazily, in batches (complex64,
    ~9.6 kB per image and zoom), with the two parts of the correlation bound
    (:func:`_correlation_bound`: the low band of the unzoomed spectrum and the magnitudes of the
    rest, 3.5 kB per image in 16 bits).

    Memory: the bound parts are kept for every image they were computed for; the spectra, the
    zoomed images and (with ``load``) the images themselves are a cache that :meth:`forget`
    releases (a caller bounds it with :meth:`cached_bytes`). Stores are allocated for every image
    at first use, but only the pages written are held; a uint8 stack of images stays uint8.

    Args:
        images: arrays from :func:`verify_array` (gray float32, VERIFY_SIZE square), or one uint8
            stack of :func:`verify_array_u8` arrays; with ``load``, the number of images.
        load: ``load(rows)`` returns the uint8 images of ``rows`` (:func:`verify_array_u8`); they
            are then read when first needed (:meth:`load_images`), and again after :meth:`forget`.
    """

    def __init__(self, images: Sequence[np.ndarray | None] | np.ndarray | int,
                 load: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self._load = load
        if isinstance(images, int):
            images = np.zeros((images, VERIFY_SIZE, VERIFY_SIZE), dtype=np.uint8)
        # one stack (a missing image is zeros: never confirmed as a duplicate)
        blank = np.zeros((VERIFY_SIZE, VERIFY_SIZE), dtype=np.float32)
        self.images = (images if isinstance(images, np.ndarray) and images.dtype == np.uint8 else
                       np.asarray(images, dtype=np.float32) if isinstance(images, np.ndarray) else
                       np.stack([blank if x is None else x for x in images]).astype(np.float32, copy=False)
                       if len(images) else np.empty((0, VERIFY_SIZE, VERIFY_SIZE), np.float32))
        n = len(self.images)
        #: images read so far (every one without ``load``)
        self.loaded = np.full(n, load is None)
        #: bound parts computed so far (by row)
        self._bounded = np.zeros(n, dtype=bool)
        self._band = np.empty((0, _band_shape()[0], 2 * _band_shape()[1]), np.uint16)
        self._rest = np.empty((0, _rest_size()), np.uint16)
        self._data: list[np.ndarray] = [np.empty((0, VERIFY_SIZE, VERIFY_SIZE // 2 + 1), np.complex64)
                                        for _ in VERIFY_ZOOMS]
        #: the zoomed images (zoom index >= 1) their spectra were computed from, for the residual
        self._zoomed: list[np.ndarray] = [np.empty((0, VERIFY_SIZE, VERIFY_SIZE), np.float32) for _ in VERIFY_ZOOMS]
        self.forget(images=False)

    def __len__(self) -> int:
        return len(self.images)

    def forget(self, *, images: bool = True) -> None:
        """Release the cached spectra and zoomed images (and, with ``load``, the images): they are
        computed (read) again when next needed. The bound parts stay.

        The spectra and zoomed-image stores are kept and written again from their start (memory the
        process has already faulted in costs nothing to rewrite, while fresh memory is faulted in page
        by page; on 300k rows the cache is released hundreds of times). The images, stored by row,
        get a fresh array of untouched zero pages (``np.zeros``, not ``zeros_like``, which writes every
        page): only the rows read again are held.
        """
        n = len(self)
        self._slot = [np.full(n, -1, dtype=np.int64) for _ in VERIFY_ZOOMS]
        self._used = [0] * len(VERIFY_ZOOMS)
        if images and self._load is not None:
            self.images = np.zeros(self.images.shape, self.images.dtype)
            self.loaded[:] = False

    def cached_bytes(self) -> int:
        """Bytes held by what :meth:`forget` releases."""
        spectrum, image = VERIFY_SIZE * (VERIFY_SIZE // 2 + 1) * 8, VERIFY_SIZE * VERIFY_SIZE
        held = sum(self._used) * spectrum + sum(self._used[1:]) * image * 4
        return held + (int(self.loaded.sum()) * image * self.images.itemsize if self._load is not None else 0)

    def bound_bytes(self) -> int:
        """Bytes held by the bound parts (kept by :meth:`forget`)."""
        return int(self._bounded.sum()) * (self._band[:1].nbytes + self._rest[:1].nbytes if len(self._band) else 0)

    def load_images(self, rows: np.ndarray) -> None:
        """Read the images of ``rows`` not read yet (with ``load``; call before scoring pairs of them)."""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        new = rows[~self.loaded[rows]]
        if len(new):
            self.images[new] = self._load(new)
            self.loaded[new] = True

    def prepare(self, rows: np.ndarray | None = None, *, z: int = 0, workers: int = 1, bound: bool = False) -> None:
        """Compute the spectra at zoom index ``z`` of ``rows`` (default: every image) now, in large
        batches on ``workers`` threads, each writing its own part of the stores (allocated beforehand).
        With ``bound``, only the bound parts (of the rows without them; ``z`` must be 0).

        Afterwards scoring pairs among these rows only reads the stores (several threads may).
        """
        rows = np.arange(len(self)) if rows is None else np.unique(np.asarray(rows, dtype=np.int64))
        missing = rows[~self._bounded[rows]] if bound else rows[self._slot[z][rows] < 0]
        if not len(missing):
            return
        self.load_images(missing)
        positions = None if bound else self._claim(z, missing)
        if not z and len(self._band) != len(self):
            self._band = np.empty((len(self), _band_shape()[0], 2 * _band_shape()[1]), np.uint16)
            self._rest = np.empty((len(self), _rest_size()), np.uint16)

        def fill(part: slice) -> None:
            self._compute(z, missing[part], None if positions is None else positions[part])

        _in_threads(fill, [slice(lo, lo + _PREPARE_BATCH) for lo in range(0, len(missing), _PREPARE_BATCH)], workers)
        if positions is not None:
            self._slot[z][missing] = positions
        self._bounded[missing] |= z == 0

    def _claim(self, z: int, rows: np.ndarray) -> np.ndarray:
        """Positions in the stores of zoom index ``z`` for ``rows`` (computed next), the stores allocated
        for every image once (pages are held only once written)."""
        n = len(self)
        if len(self._data[z]) != n:
            used = self._used[z]
            self._data[z] = _grown(self._data[z], n, used)
            if z:
                self._zoomed[z] = _grown(self._zoomed[z], n, used)
        positions = np.arange(self._used[z], self._used[z] + len(rows))
        self._used[z] += len(rows)
        return positions

    def _compute(self, z: int, rows: np.ndarray, positions: np.ndarray | None) -> None:
        """The spectra (and the bound parts of rows without them, or zoomed images) of ``rows`` at zoom index
        ``z``, into ``positions`` (``None``: only the bound parts, the spectra not kept)."""
        stack = self.images[rows].astype(np.float32, copy=False)
        if VERIFY_ZOOMS[z] != 1.0:
            stack = np.stack([_zoom(x, VERIFY_ZOOMS[z]) for x in stack])
            self._zoomed[z][positions] = stack
        spectra = _detail_spectra(stack)
        if positions is not None:
            self._data[z][positions] = spectra
        if z == 0:  # bound parts are kept for good: computed once a row, not again with its spectra
            new = ~self._bounded[rows]
            if new.any():
                self._band[rows[new]], self._rest[rows[new]] = _bound_parts(spectra[new])

    def slots(self, z: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(store, positions)``: the spectra at zoom index ``z`` of ``rows`` are ``store[positions]``."""
        rows = np.asarray(rows, dtype=np.int64)
        slot = self._slot[z]
        positions = slot[rows]
        if positions.min(initial=0) < 0:  # computed here (one thread), unless prepared: the common case
            self.prepare(rows[positions < 0], z=z)
        return self._data[z], slot[rows]

    def pixels(self, z: int, rows: np.ndarray) -> np.ndarray:
        """The images of ``rows`` at zoom index ``z`` (float32, as their spectra are computed from; each zoomed once)."""
        rows = np.asarray(rows, dtype=np.int64)
        if not z:
            self.load_images(rows)  # read with their spectra already, unless forgotten since
            return self.images[rows].astype(np.float32, copy=False)
        _, positions = self.slots(z, rows)
        return self._zoomed[z][positions]  # read after slots(): it may have allocated the store

    def bound_parts(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(band, rest, rows)``: the bound parts of the unzoomed spectra of ``rows`` (see :func:`_correlation_bound`)."""
        rows = np.asarray(rows, dtype=np.int64)
        if not self._bounded[rows].all():
            self.prepare(rows, bound=True)
        return self._band, self._rest, rows


def _grown(data: np.ndarray, size: int, used: int) -> np.ndarray:
    grown = np.empty((size, *data.shape[1:]), data.dtype)
    grown[:used] = data[:used]
    return grown


def verify_pairs(images: Sequence[np.ndarray] | np.ndarray | DetailSpectra, i: np.ndarray | Sequence[int],
                 j: np.ndarray | Sequence[int], *, accept_at: float | None = None, exact: bool = False,
                 workers: int = 1) -> VerifyResult:
    """Score whether each pair ``(images[i[k]], images[j[k]])`` shows the same photograph.

    Two independent measures at one registration:

    * ``xcorr``: the *detail* of the two images (image minus a sigma-1.5 blur: hair strands, skin
      texture, edges), windowed and normalised; the peak of their cross-correlation within
      +-VERIFY_MAX_SHIFT px registers the shift, and its value is the score. When the unzoomed
      score is at least VERIFY_ZOOM_FLOOR, either side is also magnified by VERIFY_ZOOMS
      (re-crops) and the best registration wins. A pair whose best zoom is the largest of the
      first three (1.09 either way) is also tried at the extended zooms (1.135, 1.18: 6-7 px
      cropped off); their best registration replaces it when its score, less
      EXTENDED_ZOOM_PENALTY, is higher.
    * ``residual``: at that registration, the median absolute difference of the central pixels
      after the best linear brightness/contrast fit, over b's contrast. Burst shots of one person
      share the layout and much of the detail, but not the pixels.

    The verdict ``score`` is ``xcorr - residual`` (less the extended-zoom penalty): prints of one
    photograph score ~0.45-1.0, other photographs of one person ~0.2-0.6, different people below
    (docs/dedupe.md).

    Args:
        images: arrays from :func:`verify_array` (gray float32, VERIFY_SIZE square), or a
            :class:`DetailSpectra` over them (spectra reused across calls).
        i, j: indices of the pairs.
        accept_at: pairs whose unzoomed ``xcorr`` already reaches this skip the zoom trials
            (their registration is then the unzoomed one): a fraction of the work when most
            candidates are copies. ``None`` (default): every pair gets its best registration.
        exact: also compute the exact ``xcorr`` of pairs that cannot reach VERIFY_ZOOM_FLOOR. By
            default (False) a pair whose correlation bound (:func:`_correlation_bound`) stays
            below the floor is not registered: its ``xcorr`` is that bound (below the floor, at
            least its exact value), its residual unmeasured, so its ``score`` stays below
            ``VERIFY_ZOOM_FLOOR - RESIDUAL_UNMEASURED`` (-0.65) either way; every pair at or
            above the floor gets exactly the same result.
        workers: threads for the unzoomed registration (the bulk of the work); the result does
            not depend on it.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> face = verify_array(rng.integers(0, 255, (48, 48)).astype(np.uint8))
        >>> shifted = np.roll(face, 2, axis=1)
        >>> float(verify_pairs([face, shifted], [0], [1]).score[0]) > 0.8
        True
    """
    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    m = len(i)
    xcorr, zoom = np.full(m, -1.0), np.ones(m)
    dy, dx = np.zeros(m, dtype=np.int64), np.zeros(m, dtype=np.int64)
    residual, penalty = np.full(m, RESIDUAL_UNMEASURED), np.zeros(m)
    if not m:
        return VerifyResult(xcorr - residual, xcorr, residual, zoom, dy, dx)
    spectra = images if isinstance(images, DetailSpectra) else DetailSpectra(images)
    batches = [slice(lo, min(m, lo + _VERIFY_BATCH)) for lo in range(0, m, _VERIFY_BATCH)]

    todo = np.full(m, exact)

    def bounded(sl: slice) -> None:  # pairs that provably stay below the floor keep their bound
        bound = _correlation_bound(spectra, i[sl], j[sl])
        todo[sl] = bound >= VERIFY_ZOOM_FLOOR
        xcorr[sl] = np.minimum(bound, np.nextafter(VERIFY_ZOOM_FLOOR, -1.0))

    def unzoomed(rows: np.ndarray) -> None:  # the unzoomed registration (only reads the spectra)
        xcorr[rows], dy[rows], dx[rows] = _correlate(spectra.slots(0, i[rows]), spectra.slots(0, j[rows]))

    with _one_blas_thread(), _small_pages():
        if not exact:
            if len(batches) > 1:  # in large batches; then the threads only read the stores
                spectra.prepare(np.concatenate([i, j]), bound=True, workers=workers)
            _in_threads(bounded, batches, workers)
        rows = np.nonzero(todo)[0]
        if len(rows) > _VERIFY_BATCH:
            spectra.prepare(np.concatenate([i[rows], j[rows]]), workers=workers)
        _in_threads(unzoomed, _chunks(rows), workers)
        _register_zoomed(spectra, i, j, xcorr, dy, dx, zoom, residual, penalty, accept_at=accept_at, workers=workers)
    return VerifyResult(xcorr - residual - penalty, xcorr, residual, zoom, dy, dx)


def _in_threads(fn: Any, parts: list[Any], workers: int) -> None:
    """``fn(part)`` for every part, on ``workers`` threads when there is more than one part.

    Each part writes only its own rows of the result arrays and reads the spectra, which are
    computed beforehand (numpy and BLAS release the GIL, so the threads share the cores).
    """
    if workers > 1 and len(parts) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(fn, parts))
    else:
        for part in parts:
            fn(part)


def _chunks(rows: np.ndarray, size: int = _VERIFY_BATCH) -> list[np.ndarray]:
    return [rows[lo:lo + size] for lo in range(0, len(rows), size)]


def _one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """BLAS on one thread while the verifier runs: its many small products only lose to thread start-up
    and, on a busy machine, to contention (several times slower); the verifier's own ``workers`` parallelise."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # an optional speed-up (threadpoolctl comes with scikit-learn)
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


@contextlib.contextmanager
def _small_pages() -> Iterator[None]:
    """numpy's transparent-huge-page advice off while the verifier runs (restored afterwards).

    The verifier's stores and batch temporaries are fresh memory: numpy advises huge pages for every
    array of 4 MB or more, and on a virtual machine whose kernel compacts memory to fault them in (a
    ``defrag=madvise`` setting, free pages reported back to the host) that costs more than it saves.
    On fer2013-train the dedupe step spent 12-14 s in the kernel with the advice and 4-5 s without
    (docs/dedupe.md). ``NUMPY_MADVISE_HUGEPAGE`` set in the environment is left to decide.
    """
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # another numpy layout: leave the setting alone
        _set_madvise_hugepage = None
    if _set_madvise_hugepage is None or "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        yield
        return
    before = _set_madvise_hugepage(False)
    try:
        yield
    finally:
        _set_madvise_hugepage(before)


def _register_zoomed(spectra: DetailSpectra, i: np.ndarray, j: np.ndarray, xcorr: np.ndarray, dy: np.ndarray,
                     dx: np.ndarray, zoom: np.ndarray, residual: np.ndarray, penalty: np.ndarray, *,
                     accept_at: float | None, workers: int = 1) -> None:
    """The zoom trials and the residual of the pairs at or above the floor (arrays changed in place).

    The few pairs that need them (~5 % of the candidates on fer2013-train) are gathered from the
    whole call and scored in full batches; each stage first computes the zoomed spectra it reads,
    so that the batches, on ``workers`` threads, only read them.
    """
    za_of, zb_of = np.zeros(len(i), dtype=np.int64), np.zeros(len(i), dtype=np.int64)
    tried = np.nonzero((xcorr >= VERIFY_ZOOM_FLOOR) & (xcorr < (np.inf if accept_at is None else accept_at)))[0]
    _prepare_zooms(spectra, np.concatenate([i[tried], j[tried]]), range(1, EXTENDED_FROM), workers)

    def trials(rows: np.ndarray) -> None:
        for za, zb in _COMBOS:
            s2, y2, x2 = _correlate(spectra.slots(za, i[rows]), spectra.slots(zb, j[rows]))
            better = s2 > xcorr[rows]
            sel = rows[better]
            xcorr[sel], dy[sel], dx[sel] = s2[better], y2[better], x2[better]
            zoom[sel] = VERIFY_ZOOMS[za] / VERIFY_ZOOMS[zb]
            za_of[sel], zb_of[sel] = za, zb

    def measure(rows: np.ndarray) -> None:
        residual[rows] = _residual(spectra, i[rows], j[rows], za_of[rows], zb_of[rows], dy[rows], dx[rows])

    _in_threads(trials, _chunks(tried), workers)
    measured = np.nonzero(xcorr >= VERIFY_ZOOM_FLOOR)[0]
    _in_threads(measure, _chunks(measured), workers)
    for side, combos in ((za_of, _EXTENDED_A), (zb_of, _EXTENDED_B)):
        rows = measured[side[measured] == EXTENDED_FROM - 1]
        _prepare_zooms(spectra, (i if combos is _EXTENDED_A else j)[rows], range(EXTENDED_FROM, len(VERIFY_ZOOMS)),
                       workers)
        _in_threads(lambda part, c=combos: _register_extended(spectra, i, j, part, c, xcorr, dy, dx, zoom, residual,
                                                               penalty), _chunks(rows), workers)


def _prepare_zooms(spectra: DetailSpectra, images: np.ndarray, zooms: Iterable[int], workers: int) -> None:
    """Compute the spectra of ``images`` at the zoom indices ``zooms`` now (see :meth:`DetailSpectra.prepare`)."""
    for z in zooms:
        spectra.prepare(images, z=z, workers=workers)


def _register_extended(spectra: DetailSpectra, i: np.ndarray, j: np.ndarray, rows: np.ndarray,
                       combos: tuple[tuple[int, int], ...], xcorr: np.ndarray, dy: np.ndarray, dx: np.ndarray,
                       zoom: np.ndarray, residual: np.ndarray, penalty: np.ndarray) -> None:
    """The extended zooms of ``rows`` (pairs best registered at the largest ordinary zoom): the best of
    ``combos`` replaces the registration when its score, less EXTENDED_ZOOM_PENALTY, is higher."""
    if not len(rows):
        return
    ia, ib = i[rows], j[rows]
    best = np.full(len(rows), -np.inf)
    by, bx = np.zeros(len(rows), np.int64), np.zeros(len(rows), np.int64)
    bza, bzb = np.zeros(len(rows), np.int64), np.zeros(len(rows), np.int64)
    for za, zb in combos:
        s2, y2, x2 = _correlate(spectra.slots(za, ia), spectra.slots(zb, ib))
        better = s2 > best
        best[better], by[better], bx[better], bza[better], bzb[better] = s2[better], y2[better], x2[better], za, zb
    res = _residual(spectra, ia, ib, bza, bzb, by, bx)
    win = best - res - EXTENDED_ZOOM_PENALTY > xcorr[rows] - residual[rows] - penalty[rows]
    sel = rows[win]
    xcorr[sel], residual[sel], dy[sel], dx[sel] = best[win], res[win], by[win], bx[win]
    zoom[sel] = np.array(VERIFY_ZOOMS)[bza[win]] / np.array(VERIFY_ZOOMS)[bzb[win]]
    penalty[sel] = EXTENDED_ZOOM_PENALTY


def _residual(spectra: DetailSpectra, i: np.ndarray, j: np.ndarray, za: np.ndarray, zb: np.ndarray,
              dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Median absolute residual of the registered central pixels after a linear fit, over b's std.

    ``a`` (zoomed by ``VERIFY_ZOOMS[za]``) is compared with ``b`` (zoomed by ``VERIFY_ZOOMS[zb]``)
    shifted by ``(dy, dx)``, on the central ``2 * RESIDUAL_HALF`` square (in bounds for every
    shift searched). Vectorised over the pairs.
    """
    n = len(i)
    c0, c1 = VERIFY_SIZE // 2 - RESIDUAL_HALF, VERIFY_SIZE // 2 + RESIDUAL_HALF
    a = np.empty((n, VERIFY_SIZE, VERIFY_SIZE), dtype=np.float32)
    b = np.empty((n, VERIFY_SIZE, VERIFY_SIZE), dtype=np.float32)
    for z in range(len(VERIFY_ZOOMS)):  # the zoomed images the correlation registered (kept by the spectra)
        at = np.nonzero(za == z)[0]
        if len(at):
            a[at] = spectra.pixels(z, i[at])
        at = np.nonzero(zb == z)[0]
        if len(at):
            b[at] = spectra.pixels(z, j[at])
    a = a[:, c0:c1, c0:c1]
    span = np.arange(c0, c1)
    rows = span[None, :] - dy[:, None]
    cols = span[None, :] - dx[:, None]
    b = b[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    a = a.reshape(n, -1).astype(np.float32)
    b = b.reshape(n, -1).astype(np.float32)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    gain = (a * b).sum(axis=1) / ((a * a).sum(axis=1) + 1e-6)
    res = np.abs(b - gain[:, None] * a)
    return np.median(res, axis=1).astype(np.float64) / (b.std(axis=1).astype(np.float64) + 1e-6)

