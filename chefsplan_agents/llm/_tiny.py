"""A tiny llama-architecture GGUF model, written from seeded weights, for fast tests.

Two variants share one architecture and vocabulary:

* ``random`` — seeded Gaussian weights. Greedy output is arbitrary but deterministic and its
  logprobs are spread out, which exercises fingerprints and re-scoring like a real model.
* ``scripted`` — one-hot embeddings, zero attention and feed-forward weights, and output weights
  that form a *successor table*: the next token depends only on the current one. Greedy output
  is therefore a known string (:data:`SCRIPTED_OUTPUT` followed by ``<|im_end|>``), exact
  across quantization and llama.cpp versions: tests can assert it byte for byte.

The vocabulary is SentencePiece-style: ``<unk> <s> </s>``, the chatml specials
``<|im_start|> <|im_end|>``, 256 byte tokens (fallback for anything else) and one token per
printable ASCII character (space spelled ``▁``). Nothing merges, so tokenization is one token
per character.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = [
    "SCRIPTED_OUTPUT",
    "TinyVariant",
    "build_tiny_model",
    "scripted_continuation",
]

TinyVariant = Literal["random", "scripted"]

#: Greedy output of the scripted variant after any prompt that does not end in one of its
#: characters. Its characters are all distinct, which a successor table needs.
SCRIPTED_OUTPUT = "CHEFSPLAN OK"

_SPACE = "\u2581"  # SentencePiece's visible space
_SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
_BYTE_BASE = len(_SPECIALS)
_CHAR_BASE = _BYTE_BASE + 256
_CHARS = [_SPACE] + [chr(c) for c in range(0x21, 0x7F)]
_EOS = 4  # <|im_end|>: chat turns end with it, so it is the end-of-generation token

_N_EMBD = 64
_N_HEAD = 4
_N_FF = 128
_N_LAYER = 1
_N_CTX_TRAIN = 2048

_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _vocab() -> tuple[list[str], list[float], list[int]]:
    import gguf

    tokens = list(_SPECIALS)
    types = [gguf.TokenType.UNKNOWN] + [gguf.TokenType.CONTROL] * 4
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    tokens += _CHARS
    types += [gguf.TokenType.NORMAL] * len(_CHARS)
    scores = [0.0] * len(tokens)
    return tokens, scores, [int(t) for t in types]


def _char_token(ch: str) -> int:
    return _CHAR_BASE + _CHARS.index(_SPACE if ch == " " else ch)


def scripted_continuation(prompt: str) -> str:
    """The exact greedy output of the scripted tiny model after ``prompt``.

    Args:
        prompt: The prompt text as given to the model.

    Returns:
        The remainder of :data:`SCRIPTED_OUTPUT` after the prompt's last character, or the
        whole of it when the prompt does not end in one of its characters.
    """
    last = prompt[-1:] if prompt else ""
    if last and last in SCRIPTED_OUTPUT:
        return SCRIPTED_OUTPUT[SCRIPTED_OUTPUT.index(last) + 1 :]
    return SCRIPTED_OUTPUT


def _weights(variant: TinyVariant, seed: int, n_vocab: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    d, ff = _N_EMBD, _N_FF
    head_dim = d // _N_HEAD
    w: dict[str, np.ndarray] = {}

    def mat(rows: int, cols: int, std: float) -> np.ndarray:
        if variant == "scripted":
            return np.zeros((rows, cols), dtype=np.float32)
        return (rng.standard_normal((rows, cols)) * std).astype(np.float32)

    if variant == "scripted":
        script = [_char_token(c) for c in SCRIPTED_OUTPUT]
        emb = np.zeros((n_vocab, d), dtype=np.float32)
        emb[:, 0] = 1.0  # every token outside the script shares dimension 0
        out = np.zeros((n_vocab, d), dtype=np.float32)
        for k, tok in enumerate(script):
            emb[tok, 0] = 0.0
            emb[tok, k + 1] = 1.0
        # Successor table: dimension 0 -> first script token, script token k -> token k + 1,
        # last -> end of turn. Small distinct values break ties among the other tokens, so the
        # top-k order is well defined everywhere.
        ties = np.arange(n_vocab, dtype=np.float32) / n_vocab * 0.05
        out[:, : len(script) + 1] = ties[:, None]
        successors = [*script, _EOS]
        for dim, nxt in enumerate(successors):
            out[nxt, dim] = 2.0
    else:
        emb = (rng.standard_normal((n_vocab, d)) * 0.5).astype(np.float32)
        emb[:, 0] = 2.0  # a constant dimension carries a bias through the residual stream
        out = (rng.standard_normal((n_vocab, d)) * 0.4).astype(np.float32)
        out[:, 0] = 0.0
        # Keep greedy and sampled text printable: specials and byte tokens get a strong
        # negative bias through the constant dimension.
        out[:_CHAR_BASE, :] = 0.0
        out[:_CHAR_BASE, 0] = -8.0
    w["token_embd.weight"] = emb
    w["output.weight"] = out
    w["output_norm.weight"] = np.ones(d, dtype=np.float32)
    for layer in range(_N_LAYER):
        p = f"blk.{layer}."
        w[p + "attn_norm.weight"] = np.ones(d, dtype=np.float32)
        w[p + "attn_q.weight"] = mat(d, d, 0.3)
        w[p + "attn_k.weight"] = mat(d, d, 0.3)
        w[p + "attn_v.weight"] = mat(d, d, 0.1)
        w[p + "attn_output.weight"] = mat(d, d, 0.05)
        w[p + "ffn_norm.weight"] = np.ones(d, dtype=np.float32)
        w[p + "ffn_gate.weight"] = mat(ff, d, 0.1)
        w[p + "ffn_up.weight"] = mat(ff, d, 0.1)
        w[p + "ffn_down.weight"] = mat(d, ff, 0.05)
    assert head_dim * _N_HEAD == d
    return w


def build_tiny_model(path: str | Path, *, seed: int = 0, variant: TinyVariant = "scripted") -> Path:
    """Write the tiny test model to ``path`` (atomically) and return the path.

    The same ``seed`` and ``variant`` always give a byte-identical file.

    Args:
        path: Where to write the ``.gguf`` file; parent folders are created.
        seed: Seed for the ``random`` variant's weights (the scripted one ignores it).
        variant: ``"scripted"`` (known greedy output) or ``"random"`` (seeded weights).

    Returns:
        The path written.

    Raises:
        ValueError: ``variant`` is not one of the two names.
    """
    import gguf

    if variant not in ("random", "scripted"):
        raise ValueError(f"unknown tiny model variant {variant!r}; use 'scripted' or 'random'")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tokens, scores, types = _vocab()
    fd, tmp_name = tempfile.mkstemp(prefix=".tiny-", suffix=".gguf", dir=target.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp_name, "llama")
        writer.add_name(f"chefsplan-tiny-{variant}" + (f"-s{seed}" if variant == "random" else ""))
        writer.add_context_length(_N_CTX_TRAIN)
        writer.add_embedding_length(_N_EMBD)
        writer.add_block_count(_N_LAYER)
        writer.add_feed_forward_length(_N_FF)
        writer.add_head_count(_N_HEAD)
        writer.add_head_count_kv(_N_HEAD)
        writer.add_rope_dimension_count(_N_EMBD // _N_HEAD)
        writer.add_layer_norm_rms_eps(1e-5)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_unk_token_id(0)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(_EOS)
        writer.add_add_bos_token(False)
        writer.add_add_eos_token(False)
        writer.add_add_space_prefix(False)
        writer.add_chat_template(_CHATML)
        for name, tensor in _weights(variant, seed, len(tokens)).items():
            writer.add_tensor(name, tensor)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target
