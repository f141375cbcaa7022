from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from chefsplan_agents.errors import ModelHashMismatch, ModelNotFound
from chefsplan_agents.llm import (
    KNOWN_MODELS,
    SCRIPTED_OUTPUT,
    build_tiny_model,
    file_sha256,
    resolve_model,
    scripted_continuation,
)

# --- the tiny model -------------------------------------------------------------------------


def test_tiny_model_is_small_and_byte_identical_per_seed(tmp_path: Path) -> None:
    a = build_tiny_model(tmp_path / "a.gguf", variant="random", seed=1)
    b = build_tiny_model(tmp_path / "b.gguf", variant="random", seed=1)
    c = build_tiny_model(tmp_path / "c.gguf", variant="random", seed=2)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert 100_000 < a.stat().st_size < 1_000_000
    assert a.read_bytes()[:4] == b"GGUF"
    # Only the temporary file's rename leaves anything behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gguf", "b.gguf", "c.gguf"]


def test_tiny_model_metadata(tmp_path: Path) -> None:
    import gguf

    path = build_tiny_model(tmp_path / "s.gguf")
    reader = gguf.GGUFReader(path)
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[-1]).decode() == "llama"
    tokens = reader.fields["tokenizer.ggml.tokens"]
    assert len(tokens.data) == 356
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output.weight", "blk.0.attn_q.weight"} <= names


def test_unknown_variant_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown tiny model variant 'big'"):
        build_tiny_model(tmp_path / "x.gguf", variant="big")  # type: ignore[arg-type]


def test_scripted_continuation() -> None:
    assert scripted_continuation("Hello") == SCRIPTED_OUTPUT
    assert scripted_continuation("") == SCRIPTED_OUTPUT
    assert scripted_continuation("CHEFSPLA") == "N OK"
    assert scripted_continuation("...K") == ""


# --- resolve_model --------------------------------------------------------------------------


def test_tiny_is_built_on_demand_into_the_cache(tmp_path: Path) -> None:
    model = resolve_model("tiny", cache_dir=tmp_path)
    assert model.path.parent == tmp_path
    assert model.name == "tiny"
    assert model.sha256 == hashlib.sha256(model.path.read_bytes()).hexdigest()
    mtime = model.path.stat().st_mtime_ns
    again = resolve_model("tiny", cache_dir=tmp_path)
    assert again == model
    assert model.path.stat().st_mtime_ns == mtime  # not rebuilt


def test_known_names() -> None:
    assert {"smollm2-135m", "tiny", "tiny-random"} <= set(KNOWN_MODELS)


def test_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as info:
        resolve_model("llama-70b", cache_dir=tmp_path)
    message = str(info.value)
    assert "unknown model 'llama-70b'" in message and "smollm2-135m, tiny" in message
    assert isinstance(info.value, LookupError)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match=r"model file .*nope\.gguf does not exist"):
        resolve_model(tmp_path / "nope.gguf", cache_dir=tmp_path)
    with pytest.raises(ModelNotFound, match="does not exist"):
        resolve_model(str(tmp_path / "nope.gguf"), cache_dir=tmp_path)


def test_pinned_hash(tmp_path: Path) -> None:
    model = resolve_model("tiny", cache_dir=tmp_path)
    assert resolve_model(
        model.path, sha256=model.sha256.upper(), cache_dir=tmp_path
    ) == model.__class__(path=model.path, name=model.path.stem, sha256=model.sha256)
    with pytest.raises(ModelHashMismatch, match="expected 0000"):
        resolve_model(model.path, sha256="0" * 64, cache_dir=tmp_path)


def test_hash_is_cached_by_path_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"first")
    real = file_sha256(path, tmp_path)
    assert real == hashlib.sha256(b"first").hexdigest()
    cache_file = tmp_path / "sha256.json"
    cache = json.loads(cache_file.read_text())
    (key,) = cache
    # A cached value is trusted while path, size and mtime stay the same ...
    cache[key] = "c" * 64
    cache_file.write_text(json.dumps(cache))
    assert file_sha256(path, tmp_path) == "c" * 64
    # ... and recomputed when the file changes.
    path.write_bytes(b"second!")
    os.utime(path, ns=(1, 1))
    assert file_sha256(path, tmp_path) == hashlib.sha256(b"second!").hexdigest()


def test_corrupt_hash_cache_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"data")
    (tmp_path / "sha256.json").write_text("{not json")
    assert file_sha256(path, tmp_path) == hashlib.sha256(b"data").hexdigest()
