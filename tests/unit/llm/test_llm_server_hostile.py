"""The llama.cpp server seam: hostile answers are one-line errors, and the child holds no secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chefsplan_agents.errors import LLMError, LLMServerUnavailable
from chefsplan_agents.llm import (
    GenerationParams,
    LlamaServerBackend,
    ModelFile,
    resolve_model,
    serve_model,
)
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


_answer: list[bytes] = [b'{"data": []}']


@pytest.fixture(scope="module")
def scripted(random_model: ModelFile) -> Iterator[LlamaServerBackend]:
    """A backend whose server answers every request with ``_answer[0]``."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=_answer[0])

    with LlamaServerBackend(
        "http://fake", random_model, transport=httpx.MockTransport(handler)
    ) as backend:
        yield backend


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.sampled_from([float("inf"), 2**64, "a", "<|im_start|>"])
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
_completion = st.fixed_dictionaries(
    {
        "choices": st.lists(
            st.fixed_dictionaries(
                {
                    "text": _json_values,
                    "finish_reason": _json_values,
                    "logprobs": st.one_of(
                        _json_values,
                        st.fixed_dictionaries(
                            {
                                "tokens": st.one_of(_json_values, st.lists(_json_values)),
                                "token_logprobs": st.one_of(_json_values, st.lists(_json_values)),
                                "top_logprobs": st.one_of(
                                    _json_values,
                                    st.lists(
                                        st.one_of(
                                            _json_values,
                                            st.dictionaries(st.text(max_size=4), _json_values),
                                        )
                                    ),
                                ),
                            }
                        ),
                    ),
                }
            ),
            max_size=2,
        ),
        "usage": _json_values,
    }
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_json_values, _completion).map(lambda value: json.dumps(value).encode()))
def test_any_server_answer_is_an_llm_error_or_a_result(
    scripted: LlamaServerBackend, answer: bytes
) -> None:
    _answer[0] = answer
    for call in (
        lambda: scripted.complete("Hi", GenerationParams(max_tokens=4, logprobs=2)),
        lambda: scripted.rescore("Hi", [scripted.tokenize("a")[-1]], k=2),
    ):
        try:
            call()
        except LLMError as err:
            assert "\n" not in str(err)
