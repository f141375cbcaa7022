"""A cheaper copy of a model: what a wrong-model cheater runs instead of the pinned file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from chefsplan_agents.errors import ModelLoadError

__all__ = ["QuantType", "requantize"]

#: Target types a GGUF can be requantized to here (llama.cpp's ``LLAMA_FTYPE_MOSTLY_*``).
QuantType = Literal["Q4_0", "Q2_K", "Q8_0"]
_FTYPES: dict[str, int] = {"Q4_0": 2, "Q8_0": 7, "Q2_K": 10}


def requantize(source: str | Path, target: str | Path, quant: QuantType = "Q4_0") -> Path:
    """Write ``source`` requantized to ``quant`` at ``target`` with llama.cpp's quantizer.

    Requantizing an already quantized file loses more precision than quantizing from floats,
    which is the point: a cheap imitation whose outputs differ a little.

    Args:
        source: A GGUF model file.
        target: Where to write the new file (its folder must exist).
        quant: The target quantization.

    Returns:
        ``target``.

    Raises:
        ModelLoadError: llama.cpp refused (unreadable file, unsupported type).
    """
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _FTYPES[quant]
    params.allow_requantize = True
    params.nthread = 1
    rc = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params)
    if rc != 0:
        raise ModelLoadError(
            f"llama.cpp could not requantize {source} to {quant} (code {rc}); "
            "check that it is a complete GGUF file"
        )
    return Path(target)
