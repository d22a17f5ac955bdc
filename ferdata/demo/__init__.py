"""``ferdata demo`` and the local, hostile image-search engine it runs against.

- :mod:`ferdata.demo.run`: :func:`run_demo` (the ``btfer`` recipe offline), ``NEXT_STEPS``.
- :mod:`ferdata.demo.search_server`: :class:`~ferdata.demo.search_server.LoopbackSearchServer`
  on 127.0.0.1 and its photo makers (the crawler tests use it too).

Only :mod:`ferdata.demo.run` (light) is imported here; the search server loads with its own module.

Example:
    >>> from ferdata.demo import run_demo
    >>> result = run_demo("ferdata-demo")      # doctest: +SKIP
"""

from __future__ import annotations

from ferdata.demo.run import DEMO_NOTE, NEXT_STEPS, DemoResult, check_demo_dependencies, run_demo

__all__ = ["DEMO_NOTE", "NEXT_STEPS", "DemoResult", "check_demo_dependencies", "run_demo"]
