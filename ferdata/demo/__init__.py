"""``ferdata demo`` and the loopback servers it runs against (127.0.0.1 only).

- :mod:`ferdata.demo.run`: :func:`run_demo` (the ``btfer`` recipe offline, then a push to the
  loopback Hub and ``import hub`` back), ``NEXT_STEPS``.
- :mod:`ferdata.demo.search_server`: :class:`~ferdata.demo.search_server.LoopbackSearchServer`,
  a hostile image-search engine, and its photo makers (the crawler tests use it too).
- :mod:`ferdata.demo.hub_server`: :class:`~ferdata.demo.hub_server.LoopbackHub`, a Hugging Face Hub
  for dataset repositories, and :func:`~ferdata.demo.hub_server.pointed_at` (the Hub tests use it
  too); its HTTP handler is :mod:`ferdata.demo.hub_api`, its repositories :mod:`ferdata.demo.hub_store`.

Only :mod:`ferdata.demo.run` (light) is imported here; each server loads with its own module.

Example:
    >>> from ferdata.demo import run_demo
    >>> result = run_demo("ferdata-demo")      # doctest: +SKIP
"""

from __future__ import annotations

from ferdata.demo.run import DEMO_NOTE, NEXT_STEPS, DemoResult, check_demo_dependencies, run_demo

__all__ = ["DEMO_NOTE", "NEXT_STEPS", "DemoResult", "check_demo_dependencies", "run_demo"]
