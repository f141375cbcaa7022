"""The llama.cpp server seam: hostile answers are one-line errors, and the child holds no secret."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import psutil
import pytest

from chefsplan_agents.errors import LLMServerUnavailable
from chefsplan_agents.llm import LlamaServerBackend, ModelFile, resolve_model, serve_model
from chefsplan_agents.llm._server import _server_environment

DEEP = b"[" * 200_000
SECRETS = {
    "CHEFSPLAN_KEYSTORE_PASSPHRASE": "correct horse battery staple",
    "CHEFSPLAN_CHAIN__PRIVATE_KEY": "0x" + "11" * 32,
    "AWS_SECRET_ACCESS_KEY": "not-for-the-model-server",
}


@pytest.fixture(scope="module")
def random_model(tmp_path_factory: pytest.TempPathFactory) -> ModelFile:
    return resolve_model("tiny-random", cache_dir=tmp_path_factory.mktemp("llm-cache"))


def test_a_deeply_nested_answer_is_a_one_line_error(random_model: ModelFile) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=DEEP)

    transport = httpx.MockTransport(handler)
    with pytest.raises(LLMServerUnavailable, match="non-JSON answer to /v1/models") as info:
        LlamaServerBackend("http://fake", random_model, transport=transport)
    assert "\n" not in str(info.value)


def test_a_deep_answer_does_not_kill_a_process_that_imported_the_chain(
    random_model: ModelFile,
) -> None:
    program = (
        "import sys\n"
        "import httpx\n"
        "import chefsplan_agents.chain\n"
        "from chefsplan_agents.errors import LLMServerUnavailable\n"
        "from chefsplan_agents.llm import LlamaServerBackend\n"
        "assert sys.getrecursionlimit() >= 100000\n"
        "deep = httpx.MockTransport(lambda request: httpx.Response(200, content=b'[' * 200_000))\n"
        "try:\n"
        "    LlamaServerBackend('http://fake', sys.argv[1], transport=deep)\n"
        "except LLMServerUnavailable:\n"
        "    print('refused')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, str(random_model.path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["refused"]


def test_the_child_environment_is_an_allow_list() -> None:
    parent = {
        **SECRETS,
        "PATH": "/usr/bin",
        "HOME": "/home/x",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": "/tmp/x",
        "OMP_NUM_THREADS": "1",
        "GGML_CUDA_NO_PINNED": "1",
        "LLAMA_ARG_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "0",
        "CHEFSPLAN_STORAGE__BACKEND": "kubo",
        "GITHUB_TOKEN": "ghp_x",
    }
    child = _server_environment(parent)
    assert not set(SECRETS) & set(child)
    assert "GITHUB_TOKEN" not in child and "CHEFSPLAN_STORAGE__BACKEND" not in child
    for name in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "OMP_NUM_THREADS"):
        assert child[name] == parent[name]
    for name in ("GGML_CUDA_NO_PINNED", "LLAMA_ARG_THREADS", "CUDA_VISIBLE_DEVICES"):
        assert child[name] == parent[name]
    assert child["PYTHONUNBUFFERED"] == "1"


def test_the_server_child_does_not_see_the_parents_secrets(
    random_model: ModelFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = {child.pid for child in psutil.Process().children()}
    with serve_model(random_model, n_ctx=64, n_threads=1) as url:
        assert httpx.get(url + "/v1/models", timeout=5).status_code == 200
        servers = [c for c in psutil.Process().children() if c.pid not in before]
        assert len(servers) == 1
        seen = servers[0].environ()  # read from /proc: what the child really holds
    assert seen, "the child's environment could not be read"
    assert not set(SECRETS) & set(seen), sorted(set(SECRETS) & set(seen))
    assert all(value not in seen.values() for value in SECRETS.values())
    assert seen["OMP_NUM_THREADS"] == "1" and seen["PATH"] == os.environ["PATH"]
