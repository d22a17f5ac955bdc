"""Find the recipes (``pipelines/``) and manifests (``manifests/``) that ship with ferdata.

In a wheel they live inside the package (``ferdata/pipelines``, ``ferdata/manifests``); in a
source checkout or an editable install they are the top-level folders of the repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ferdata.errors import ManifestError

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(kind: str) -> Path:
    """Return the folder of packaged ``pipelines`` or ``manifests``.

    Raises:
        ValueError: for another ``kind``.
    """
    if kind not in {"pipelines", "manifests"}:
        raise ValueError(f"kind must be 'pipelines' or 'manifests', got {kind!r}")
    for candidate in (_PACKAGE_DIR / kind, _PACKAGE_DIR.parent / kind):
        if candidate.is_dir():
            return candidate
    raise ManifestError(f"ferdata's {kind}/ folder is missing from the installation (looked in {_PACKAGE_DIR})")


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file with the safe loader; errors name the file.

    Raises:
        ManifestError: when the file is missing or not valid YAML.
    """
    import yaml

    path = Path(path)
    try:
        with path.open(encoding="utf-8") as f:
            return yaml.safe_load(f)
    except FileNotFoundError as e:
        raise ManifestError(f"file not found: {path}") from e
    except yaml.YAMLError as e:
        raise ManifestError(f"{path} is not valid YAML: {e}") from e


def manifest_path(name_or_path: str | Path, *, suffix: str = ".yaml") -> Path:
    """Resolve a manifest given as a path or as the name of a packaged one (``labels``, ``dataset-card``)."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml", ".md"} and path.exists():
        return path
    packaged = resource_dir("manifests") / f"{name_or_path}{suffix}"
    if packaged.exists():
        return packaged
    names = sorted(p.stem for p in resource_dir("manifests").glob(f"*{suffix}"))
    raise ManifestError(f"manifest {str(name_or_path)!r} is neither a YAML file nor one of: {', '.join(names)}")
