"""``chefsplan`` with the devnet's nodes gated: a prompt holding ``SLOW`` waits in the node's
model until the file named by ``$CHAT_RELEASE_FILE`` exists (at most a minute).

The terminal test needs a turn that is still running when it presses Ctrl-C. The tiny model
answers in milliseconds, so a timer would race; a gate the test opens itself does not.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from chefsplan_agents import devnet as devnet_module
from chefsplan_agents.cli import main

_create = devnet_module.Devnet.create.__func__  # type: ignore[attr-defined]


class _Gated:
    def __init__(self, real: Any, release: Path) -> None:
        self._real = real
        self._release = release

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def complete(self, prompt: str, *args: Any, **kwargs: Any) -> Any:
        if "SLOW" in prompt:
            deadline = time.monotonic() + 60
            while not self._release.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return self._real.complete(prompt, *args, **kwargs)


def _gated_create(cls: Any, *args: Any, **kwargs: Any) -> Any:
    net = _create(cls, *args, **kwargs)
    release = Path(os.environ["CHAT_RELEASE_FILE"])
    for node in net.nodes:
        node.llm = _Gated(node.llm, release)
    return net


devnet_module.Devnet.create = classmethod(_gated_create)  # type: ignore[method-assign,assignment]

if __name__ == "__main__":
    sys.argv[0] = "chefsplan"
    main()
