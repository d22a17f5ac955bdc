"""A local, hostile image-search engine on 127.0.0.1 (random port; nothing else is contacted).

It answers Bing's result-page URL (``/images/async?q=QUERY&first=N``) with HTML in the format
icrawler's ``BingParser`` reads, listing image URLs on the same server, and serves those images
plus hostile responses (404, 500, a slow answer, a redirect loop, a 50 GB Content-Length, an
endless body, HTML served as a JPEG, a truncated JPEG, a decompression bomb). ``ferdata demo``
runs the real ``btfer`` recipe against it (``--engine loopback``); the crawler tests use it too.

The photos are made at run time from scikit-image's sample images (``astronaut``: Eileen Collins,
a NASA photo in the public domain; ``coffee``: public domain / CC0), cropped, flipped, re-toned
and pasted on generated backgrounds, so ferdata ships no image files. scikit-image is a declared
dependency of the demo (``pip install 'ferdata[demo]'``; the ``dev`` extra includes it).

Example:
    >>> with LoopbackSearchServer() as server:                # doctest: +SKIP
    ...     server.add_image("face0", jpeg(face_photos(1)[0]))
    ...     server.set_results("man happy face", ["face0", "404"])
    ...     server.base_url
    'http://127.0.0.1:40123'
"""

from __future__ import annotations

import html
import io
import json
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

PAGE_SIZE = 35


def jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _skimage_data() -> Any:
    try:
        from skimage import data
    except ImportError as e:
        from ferdata.errors import UsageError

        raise UsageError("the demo's photos come from scikit-image's public-domain samples, which is not installed: "
                         "pip install 'ferdata[demo]' (or pip install -e \".[dev]\")") from e
    return data


def _astronaut() -> np.ndarray:
    return _skimage_data().astronaut()


def face_photos(n: int) -> list[np.ndarray]:
    """``n`` distinct 200x200 RGB photos of one face (crops, flips and tones of the astronaut)."""
    img = _astronaut()
    out = []
    for i in range(n):
        dy, dx = i % 41, (i * 7) % 43
        crop = img[10 + dy:210 + dy, 140 + dx:340 + dx].astype(np.float32)
        crop = crop * (0.75 + 0.5 * ((i * 0.618) % 1.0)) + (i % 5) * 3
        if i % 2:
            crop = crop[:, ::-1]
        out.append(np.clip(crop, 0, 255).astype(np.uint8))
    return out


def no_face_photo() -> np.ndarray:
    """A photo with no face in it (scikit-image's coffee cup)."""
    return _skimage_data().coffee()[::2, ::2]


def three_faces_photo() -> np.ndarray:
    """Three astronaut faces side by side (a group photo)."""
    img = _astronaut()
    face = img[10:210, 140:340]
    return np.concatenate([face, face[:, ::-1], (face * 0.8).astype(np.uint8)], axis=1)


def scene(face: np.ndarray, seed: int) -> np.ndarray:
    """A 360x360 photo: the face pasted at a random place on a distinct smooth background."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    canvas = np.asarray(Image.fromarray(small).resize((360, 360), Image.BICUBIC)).copy()
    side = int(rng.integers(150, 190))
    pasted = np.asarray(Image.fromarray(face).resize((side, side), Image.BICUBIC))
    y, x = rng.integers(0, 360 - side, 2)
    canvas[y:y + side, x:x + side] = pasted
    return canvas


def png_bomb(side: int = 30000) -> bytes:
    """A tiny PNG whose header claims ``side`` x ``side`` gray pixels (a decompression bomb)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row = b"\x00" + b"\x00" * side
    idat = zlib.compress(row * 16, 9)  # only the first rows; the header is what matters
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


class LoopbackSearchServer:
    """A threaded HTTP server on 127.0.0.1 with Bing-format result pages and hostile routes.

    Image routes are ``/img/<name>.jpg``. Built-in hostile names: ``404``, ``500``, ``slow``
    (answers after ``slow_seconds``), ``loop-a``/``loop-b`` (redirect to each other), ``huge``
    (claims a 50 GB Content-Length), ``stream`` (an endless body with no Content-Length).
    """

    def __init__(self, *, slow_seconds: float = 3.0, latency: float = 0.0) -> None:
        self.images: dict[str, tuple[bytes, str]] = {}
        self.results: dict[str, list[str]] = {}
        self.hits: Counter = Counter()
        self.slow_seconds = slow_seconds
        #: seconds every image response waits (a web server's latency, for benchmarks)
        self.latency = latency
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------ content

    def add_image(self, name: str, data: bytes, content_type: str = "image/jpeg") -> str:
        """Serve ``data`` at ``/img/<name>.jpg``; return its URL."""
        self.images[name] = (data, content_type)
        return self.url(name)

    def set_results(self, query: str, names: list[str]) -> None:
        """The result list of a query: image names (or full URLs)."""
        self.results[query] = list(names)

    def url(self, name: str) -> str:
        return name if "://" in name else f"{self.base_url}/img/{name}.jpg"

    def add_hostile_set(self) -> dict[str, str]:
        """Add the standard hostile images; return {name: expected ledger reason}."""
        good = jpeg(face_photos(1)[0])
        self.add_image("html", b"<!doctype html><html><body>Not an image</body></html>", "image/jpeg")
        self.add_image("trunc", good[: len(good) // 2])
        self.add_image("bomb", png_bomb(), "image/png")
        return {"404": "http_404", "500": "http_500", "slow": "timeout", "loop-a": "redirect_loop",
                "huge": "too_large", "stream": "too_large", "html": "not_an_image", "trunc": "corrupt",
                "bomb": "too_many_pixels"}

    # ------------------------------------------------------------ server

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> LoopbackSearchServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                try:
                    owner._handle(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes = b"", ctype: str = "text/html",
              headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        with self._lock:
            self.hits[parts.path] += 1
        if parts.path == "/images/async":
            qs = parse_qs(parts.query)
            query = qs.get("q", [""])[0]
            first = int(qs.get("first", ["0"])[0])
            names = self.results.get(query, [])[first:first + PAGE_SIZE]
            divs = []
            for name in names:
                m = html.escape(json.dumps({"murl": self.url(name), "turl": self.url(name)}, separators=(",", ":")))
                divs.append(f'<div class="imgpt"><a class="iusc" m="{m}" href="#"><img src="x"></a></div>')
            self._send(h, 200, f"<html><body>{''.join(divs)}</body></html>".encode())
            return
        if not parts.path.startswith("/img/") or not parts.path.endswith(".jpg"):
            self._send(h, 404, b"not found")
            return
        name = parts.path[len("/img/"):-len(".jpg")]
        if self.latency:
            time.sleep(self.latency)
        if name in self.images:
            data, ctype = self.images[name]
            self._send(h, 200, data, ctype)
        elif name == "500":
            self._send(h, 500, b"server error")
        elif name == "slow":
            time.sleep(self.slow_seconds)
            self._send(h, 200, jpeg(face_photos(1)[0]), "image/jpeg")
        elif name in {"loop-a", "loop-b"}:
            other = "loop-b" if name == "loop-a" else "loop-a"
            self._send(h, 302, b"", headers={"Location": f"/img/{other}.jpg"})
        elif name == "huge":
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Content-Length", str(50 * 10**9))
            h.end_headers()
            h.wfile.write(b"\xff\xd8\xff" + b"\x00" * 1024)
        elif name == "stream":
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.end_headers()
            chunk = b"\xff\xd8\xff" + b"\x00" * 65533
            for _ in range(200):  # at most ~13 MB, then give up
                h.wfile.write(chunk)
        else:
            self._send(h, 404, b"not found")


def canonical_classes() -> list[str]:
    """The seven basic FER classes (angry ... surprise), in label-map order."""
    from ferdata.labels import LabelMaps

    return list(LabelMaps.load().canonical)


@contextmanager
def btfer_demo_engine(workdir: Path, *, per_class_photos: int = 10, latency: float = 0.0,
                      classes: list[str] | None = None) -> Iterator[tuple[LoopbackSearchServer, Path]]:
    """A running loopback engine for ``ferdata build btfer`` and the query manifest it answers.

    Each class's query ``<class> face`` lists ``per_class_photos`` distinct face photos plus traps:
    a 404, HTML served as a JPEG, a truncated JPEG, a photo without a face and a duplicate under a
    second URL (the angry class gets the whole hostile set and a three-face group photo instead).
    ``classes`` defaults to the seven canonical FER classes of ``manifests/labels.yaml``.

    Example:
        >>> with btfer_demo_engine(Path("/tmp/demo")) as (server, queries):   # doctest: +SKIP
        ...     print(server.base_url, queries)
    """
    if classes is None:
        classes = canonical_classes()
    workdir.mkdir(parents=True, exist_ok=True)
    queries = workdir / "queries.yaml"
    queries.write_text("format: ferdata-queries/1\ntemplate: \"{expression} face\"\ndemographics: {}\nclasses:\n"
                       + "".join(f"  {c}: [{c}]\n" for c in classes))
    n = per_class_photos
    faces = face_photos(len(classes) * n)
    with LoopbackSearchServer(slow_seconds=2.0, latency=latency) as server:
        hostile = server.add_hostile_set()
        server.add_image("noface", jpeg(no_face_photo()))
        server.add_image("group", jpeg(three_faces_photo()))
        for c, name in enumerate(classes):
            names = []
            for i in range(n):
                key = f"{name}{i}"
                server.add_image(key, jpeg(scene(faces[c * n + i], seed=c * 100 + i)))
                names.append(key)
            extra = ["404", "html", "trunc", "noface", names[0]] if name != "angry" else [*hostile, "group"]
            server.set_results(f"{name} face", extra + names + [f"{server.base_url}/img/{names[1]}.jpg?copy"])
        yield server, queries
