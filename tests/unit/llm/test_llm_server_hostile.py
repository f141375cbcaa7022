"""The llama.cpp server seam: hostile answers are one-line errors, and the child holds no secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chefsplan_agents.errors import GenerationError, LLMError, LLMServerUnavailable
from chefsplan_agents.llm import (
    MAX_SERVER_ANSWER_BYTES,
    GenerationParams,
    LlamaServerBackend,
    ModelFile,
    resolve_model,
    serve_model,
)
from chefsplan_agents.llm._server import _answer_limit, _server_environment

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


def _answering(
    completions: Callable[[], httpx.Response],
) -> httpx.MockTransport:
    """A server that lists its model and answers completions with ``completions()``."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, content=b'{"data": []}')
        return completions()

    return httpx.MockTransport(handler)


class _Pulled:
    """A stream of ``total`` bytes of a valid completion that counts how much was read."""

    def __init__(self, total: int, chunk: int = 1 << 16, pause_s: float = 0.0) -> None:
        self.total, self.chunk, self.pause_s, self.pulled = total, chunk, pause_s, 0

    def __iter__(self) -> Iterator[bytes]:
        head, tail = b'{"choices": [{"text": "', b'", "logprobs": null}], "usage": null}'
        body = head + b"a" * (self.total - len(head) - len(tail)) + tail
        for start in range(0, len(body), self.chunk):
            if self.pause_s:
                time.sleep(self.pause_s)
            piece = body[start : start + self.chunk]
            self.pulled += len(piece)
            yield piece


def test_limits_follow_the_request_up_to_the_hard_cap() -> None:
    assert _answer_limit() == 1 << 20  # the model list
    assert _answer_limit(128, 5) == (1 << 20) + 128 * 6 * 512
    assert _answer_limit(2048, 20) == MAX_SERVER_ANSWER_BYTES == 8 << 20
    assert _answer_limit(10**9, 10**9) == MAX_SERVER_ANSWER_BYTES


def test_a_completion_over_its_limit_is_refused_while_streaming(random_model: ModelFile) -> None:
    params = GenerationParams(max_tokens=4, logprobs=2)
    limit = _answer_limit(4, 2)
    stream = _Pulled(4 * limit)
    transport = _answering(lambda: httpx.Response(200, content=stream))
    with LlamaServerBackend("http://fake", random_model, transport=transport) as backend:
        with pytest.raises(LLMServerUnavailable, match=f"over the limit of {limit} bytes") as info:
            backend.complete("Hi", params)
    assert "\n" not in str(info.value)
    assert limit < stream.pulled <= limit + stream.chunk  # it stopped reading at the limit


def test_a_declared_length_over_the_limit_is_refused_unread(random_model: ModelFile) -> None:
    stream = _Pulled(MAX_SERVER_ANSWER_BYTES + 1)
    headers = {"Content-Length": str(MAX_SERVER_ANSWER_BYTES + 1)}
    transport = _answering(lambda: httpx.Response(200, headers=headers, content=stream))
    with LlamaServerBackend("http://fake", random_model, transport=transport) as backend:
        with pytest.raises(LLMServerUnavailable, match="over the limit of"):
            backend.rescore("Hi there", backend.tokenize(" you")[-1:], k=2)
    assert stream.pulled == 0


def test_a_huge_error_body_is_refused_and_a_short_one_is_one_line(
    random_model: ModelFile,
) -> None:
    stream = _Pulled(8 << 20)
    transport = _answering(lambda: httpx.Response(500, content=stream))
    with LlamaServerBackend("http://fake", random_model, transport=transport) as backend:
        with pytest.raises(LLMServerUnavailable, match="over the limit of"):
            backend.complete("Hi", GenerationParams(max_tokens=4))
    assert stream.pulled < 2 << 20
    transport = _answering(lambda: httpx.Response(500, content=b"broken\nmodel\r\nstate"))
    with LlamaServerBackend("http://fake", random_model, transport=transport) as backend:
        with pytest.raises(GenerationError, match="answered 500 to /v1/completions: broken model"):
            backend.complete("Hi", GenerationParams(max_tokens=4))


def test_an_answer_dripped_past_the_timeout_is_refused(random_model: ModelFile) -> None:
    stream = _Pulled(1 << 20, chunk=1, pause_s=0.01)
    transport = _answering(lambda: httpx.Response(200, content=stream))
    with LlamaServerBackend(
        "http://fake", random_model, transport=transport, timeout_s=0.5
    ) as backend:
        with pytest.raises(LLMServerUnavailable, match="did not finish its answer"):
            backend.complete("Hi", GenerationParams(max_tokens=4))
    assert stream.pulled < 1 << 20
