"""The loopback image-search server now lives in the package (``ferdata.demo.search_server``, used by
``ferdata demo``); this module keeps the tests' imports working."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ferdata.demo.search_server import (  # noqa: F401
    PAGE_SIZE,
    LoopbackSearchServer,
    face_photos,
    jpeg,
    no_face_photo,
    png_bomb,
    scene,
    three_faces_photo,
)
from ferdata.demo.search_server import btfer_demo_engine as _btfer_demo_engine


@contextmanager
def btfer_demo_engine(workdir: Path, *, per_class_photos: int = 10, latency: float = 0.0
                      ) -> Iterator[tuple[LoopbackSearchServer, Path]]:
    """:func:`ferdata.demo.search_server.btfer_demo_engine` with the tests' class list."""
    from tests.conftest import CLASSES

    with _btfer_demo_engine(workdir, per_class_photos=per_class_photos, latency=latency,
                            classes=list(CLASSES)) as engine:
        yield engine
