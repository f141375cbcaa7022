"""A watcher on a devnet: it samples results inside their challenge window, challenges the
forged ones with evidence, follows each challenge to its end and is paid; honest results pass."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from devnet_helpers import tiny_devnet

from chefsplan_agents.bundles import GenerationParams
from chefsplan_agents.devnet import Devnet
from chefsplan_agents.errors import ConfigError, NodeError
from chefsplan_agents.identity import Identity
from chefsplan_agents.llm import LlamaCppBackend
from chefsplan_agents.market import TaskHandle, TaskResult, Timeouts
from chefsplan_agents.testing import Lazy
from chefsplan_agents.verify import Watcher, WatchEvent, WatchStage, load_evidence


@pytest.fixture
def net() -> Iterator[Devnet]:
    with tiny_devnet(5, cheaters={0: Lazy()}) as devnet:
        yield devnet


def _watcher(net: Devnet, llm: LlamaCppBackend, state: Path, events: list[WatchEvent]) -> Watcher:
    identity = Identity.generate()
    address = net.chain.add_account(identity.export_secrets()[1])
    net.chain.transfer(address, 10**18)
    return Watcher(
        address, net.chain, net.market, net.store, llm, state_dir=state, on_event=events.append
    )


def _post(net: Devnet, node: int) -> TaskHandle:
    return net.delegate(
        "Say hi",
        assignee=net.nodes[node].address,
        timeouts=Timeouts(challenge_window=3600),
        params=GenerationParams(max_tokens=12),
    )


def _settled(net: Devnet, handle: TaskHandle) -> TaskResult | None:
    finalized = net.market.events("TaskFinalized", task_id=handle.task_id)
    return TaskResult(int(finalized[0].args["result"])) if finalized else None


def test_e_the_watcher_catches_a_cheater_and_passes_an_honest_node(
    net: Devnet, scripted: LlamaCppBackend, tmp_path: Path
) -> None:
    events: list[WatchEvent] = []
    watcher = _watcher(net, scripted, tmp_path / "watch", events)
    net.add_watcher(watcher)
    cheater = net.nodes[0]
    stake_before = net.registry.get_provider(cheater.address).stake  # type: ignore[union-attr]
    forged, honest = _post(net, 0), _post(net, 1)

    for _ in range(80):
        if _settled(net, forged) and _settled(net, honest) and not watcher.busy:
            break
        net.step()
    else:
        raise AssertionError("the tasks never settled")

    assert _settled(net, forged) is TaskResult.OVERTURNED
    assert _settled(net, honest) is TaskResult.ACCEPTED
    challenged = net.market.events("TaskChallenged")
    assert [bytes(e.args["taskId"]) for e in challenged] == [forged.task_id]
    assert str(challenged[0].args["challenger"]) == watcher.address
    evidence = load_evidence(net.store, str(challenged[0].args["evidenceCid"]))
    assert evidence.provider == cheater.address and evidence.check
    record = watcher.record(forged.task_id)
    assert record is not None and record.stage is WatchStage.DONE and record.upheld is True
    passed = watcher.record(honest.task_id)
    assert passed is not None and passed.stage is WatchStage.PASSED
    # The cheater is slashed; the watcher got its bond back and withdrew it.
    assert net.registry.get_provider(cheater.address).stake == stake_before - forged.params.bond  # type: ignore[union-attr]
    assert watcher.withdrawn_wei >= net.market.challenge_bond
    assert net.market.balance_of(watcher.address) == 0
    assert {"watching", "challenged", "resolved", "settled", "passed"} <= {e.kind for e in events}

    # A restarted watcher remembers: it neither challenges again nor re-checks.
    again = Watcher(
        watcher.address, net.chain, net.market, net.store, scripted, state_dir=tmp_path / "watch"
    )
    assert again.tick() == 0
    # Its upheld challenge's bond came back: nothing at stake counts against the cap.
    assert again.posted_wei == net.market.challenge_bond and again.spent_wei == 0
    assert len(net.market.events("TaskChallenged")) == 1


def test_the_spending_cap_stops_challenges(
    net: Devnet, scripted: LlamaCppBackend, tmp_path: Path
) -> None:
    events: list[WatchEvent] = []
    watcher = _watcher(net, scripted, tmp_path / "watch", events)
    watcher.max_spend_wei = net.market.challenge_bond - 1
    net.add_watcher(watcher)
    forged = _post(net, 0)
    for _ in range(40):
        record = watcher.record(forged.task_id)
        if record is not None and record.stage.decided:
            break
        net.step()
    record = watcher.record(forged.task_id)
    assert record is not None and record.stage is WatchStage.SKIPPED
    assert "spending cap" in record.reason
    assert net.market.events("TaskChallenged") == []


def test_a_state_folder_of_another_market_is_refused(
    net: Devnet, scripted: LlamaCppBackend, tmp_path: Path
) -> None:
    state = tmp_path / "watch"
    state.mkdir()
    other = '{"cursor": 7, "market": "1:0x0000000000000000000000000000000000000001", '
    (state / "watch.json").write_text(other + '"seed": "00", "spent_wei": 0}')
    with pytest.raises(ConfigError, match="another --state-dir"):
        Watcher(net.nodes[1].address, net.chain, net.market, net.store, scripted, state_dir=state)


class _RevealsAsCid:
    """A provider's store that stores its result but hands back ``cid`` to reveal instead."""

    def __init__(self, inner: object, cid: str) -> None:
        self._inner, self._cid = inner, cid

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def put(self, data: bytes, *args: object, **kwargs: object) -> str:
        self._inner.put(data, *args, **kwargs)  # type: ignore[attr-defined]
        return self._cid


def test_a_result_revealed_under_a_malformed_cid_is_challenged_not_a_crash(
    net: Devnet, scripted: LlamaCppBackend, tmp_path: Path
) -> None:
    """A cheater that reveals a CID no evidence may name must not stop every watcher."""
    net.nodes[0].store = _RevealsAsCid(net.nodes[0].store, "bafk/not:a cid")  # type: ignore[assignment]
    events: list[WatchEvent] = []
    watcher = _watcher(net, scripted, tmp_path / "watch", events)
    net.add_watcher(watcher)
    forged = _post(net, 0)

    for _ in range(80):
        if _settled(net, forged) and not watcher.busy:
            break
        net.step()
    else:
        raise AssertionError("the task never settled")

    assert _settled(net, forged) is TaskResult.OVERTURNED
    challenged = net.market.events("TaskChallenged")
    evidence = load_evidence(net.store, str(challenged[0].args["evidenceCid"]))
    assert evidence.provider == net.nodes[0].address and evidence.result_cid is None
    assert "bafk/not:a cid" in evidence.reason


@pytest.mark.parametrize(
    ("file", "content", "says"),
    [
        # json.loads on ~100 kB of "[" overflows the C stack: the process died with SIGSEGV.
        ("watch.json", b"[" * 200_000, "nests"),
        ("watch.json", b'{"pad": "' + b"x" * (5 << 20) + b'"}', "bytes"),
        # A record whose task id is not one: the first tick died in bytes.fromhex.
        (
            "tasks/0xabc.json",
            b'{"task_id": "0xabc", "posted_block": 1, "stage": "watching"}',
            "0xabc",
        ),
    ],
    ids=["deep", "huge", "bad-task-id"],
)
def test_a_garbage_state_folder_is_one_clear_error(
    net: Devnet, scripted: LlamaCppBackend, tmp_path: Path, file: str, content: bytes, says: str
) -> None:
    state = tmp_path / "watch"
    (state / "tasks").mkdir(parents=True)
    (state / file).write_bytes(content)
    with pytest.raises(NodeError, match="move it away") as caught:
        Watcher(net.nodes[1].address, net.chain, net.market, net.store, scripted, state_dir=state)
    message = str(caught.value)
    assert says in message and "\n" not in message and len(message) < 400


class _NoContextCheck:
    """A cheater's model that says every prompt fits its context."""

    def __init__(self, inner: object) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def tokenize(self, text: str, *args: object, **kwargs: object) -> list[int]:
        return [1]


def test_a_task_the_watcher_cannot_rescore_is_skipped_once(
    net: Devnet, scripted: LlamaCppBackend, tmp_path: Path
) -> None:
    """A prompt over the watcher's context used to raise out of every tick (a full re-score
    attempt each time) until the window closed; it is a task the watcher cannot check."""
    net.nodes[0].llm = _NoContextCheck(net.nodes[0].llm)  # type: ignore[assignment]
    events: list[WatchEvent] = []
    watcher = _watcher(net, scripted, tmp_path / "watch", events)
    net.add_watcher(watcher)
    handle = net.delegate(
        "word " * 800,
        assignee=net.nodes[0].address,
        timeouts=Timeouts(challenge_window=3600),
        params=GenerationParams(max_tokens=12),
    )
    for _ in range(40):
        record = watcher.record(handle.task_id)
        if record is not None and record.stage.decided:
            break
        net.step()
    record = watcher.record(handle.task_id)
    assert record is not None and record.stage is WatchStage.SKIPPED
    assert "context" in record.reason
    assert net.market.events("TaskChallenged") == []
