"""Challenge panels on a devnet: provider nodes vote on their own re-score, and stepping the
devnet drives a challenge to its decision and the task to its settlement."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from devnet_helpers import tiny_devnet

from chefsplan_agents.bundles import GenerationParams
from chefsplan_agents.chain import Event
from chefsplan_agents.devnet import Devnet
from chefsplan_agents.errors import NoQuorum, StoreUnavailable
from chefsplan_agents.identity import Identity
from chefsplan_agents.market import TaskHandle, TaskResult, Timeouts, VoteState
from chefsplan_agents.node import ProviderNode
from chefsplan_agents.storage import compute_cid
from chefsplan_agents.testing import Lazy
from chefsplan_agents.verify import ChallengeEvidence, Panelist, PanelStage, publish_evidence

_WINDOW = Timeouts(challenge_window=3600)


def _devnet(*, cheat: bool) -> Devnet:
    return tiny_devnet(5, cheaters={0: Lazy()} if cheat else None)


@pytest.fixture
def cheating_net() -> Iterator[Devnet]:
    with _devnet(cheat=True) as net:
        yield net


@pytest.fixture
def honest_net() -> Iterator[Devnet]:
    with _devnet(cheat=False) as net:
        yield net


def _funded(net: Devnet) -> str:
    identity = Identity.generate()
    address = net.chain.add_account(identity.export_secrets()[1])
    net.chain.transfer(address, 10**18)
    return address


def _revealed_task(net: Devnet) -> TaskHandle:
    """A one-replica task with a challenge window, run and revealed by node 0."""
    handle = net.delegate(
        "Say hi",
        assignee=net.nodes[0].address,
        timeouts=_WINDOW,
        params=GenerationParams(max_tokens=12),
    )
    for _ in range(20):
        if net.market.events("ResultRevealed", task_id=handle.task_id):
            return handle
        net.step()
    raise AssertionError("node 0 never revealed")


def _evidence(net: Devnet, handle: TaskHandle) -> str:
    reveal = net.market.events("ResultRevealed", task_id=handle.task_id)[0]
    evidence = ChallengeEvidence(
        chain_id=net.chain.chain_id,
        market=net.market.address,
        task_id="0x" + handle.task_id.hex(),
        bundle_cid=handle.bundle_cid,
        provider=str(reveal.args["provider"]),
        result_cid=str(reveal.args["resultCid"]),
        output_hash="0x" + bytes(reveal.args["outputHash"]).hex(),
        check="token",
        reason="claimed tokens are not the model's choices",
    )
    return publish_evidence(net.store, evidence)


def _events(net: Devnet, name: str, handle: TaskHandle) -> list[Event]:
    return net.market.events(name, task_id=handle.task_id)


def _drive(net: Devnet, handle: TaskHandle, max_steps: int = 60) -> Event:
    """Step the devnet (nothing else) until the task settles; its TaskFinalized event."""
    for _ in range(max_steps):
        finalized = _events(net, "TaskFinalized", handle)
        if finalized:
            net.drain()  # let the nodes withdraw what settlement credited them
            return finalized[0]
        net.step()
    raise AssertionError("the challenged task never settled")


def _panel(net: Devnet, handle: TaskHandle) -> list[ProviderNode]:
    drawn = _events(net, "PanelDrawn", handle)
    assert len(drawn) == 1
    seats = {str(a).lower() for a in drawn[0].args["panel"]}
    return [n for n in net.nodes if n.address.lower() in seats]


def _panelist(node: ProviderNode) -> Panelist:
    duty = node.duties[0]
    assert isinstance(duty, Panelist)
    return duty


def _stakes(net: Devnet) -> dict[str, int]:
    out = {}
    for node in net.nodes:
        record = net.registry.get_provider(node.address)
        assert record is not None
        out[node.address] = record.stake
    return out


@dataclass
class _Challenged:
    handle: TaskHandle
    challenger: str
    stakes: dict[str, int]  # registry stakes before the challenge
    panel: list[ProviderNode]


def _challenged(
    net: Devnet, evidence: Callable[[Devnet, TaskHandle], str] = _evidence
) -> _Challenged:
    """Node 0's revealed task, challenged by a new funded account naming ``evidence``."""
    handle = _revealed_task(net)
    stakes = _stakes(net)
    challenger = _funded(net)
    net.market.challenge(handle.params, evidence(net, handle), sender=challenger)
    return _Challenged(handle, challenger, stakes, _panel(net, handle))


def _reputation_events(net: Devnet, address: str) -> list[Event]:
    return net.registry.events("ReputationUpdated", provider=address)


def test_a_cheaters_result_is_overturned_by_the_panel_on_its_own(cheating_net: Devnet) -> None:
    net = cheating_net
    cheater = net.nodes[0]
    bond = net.market.challenge_bond
    c = _challenged(net)
    handle, challenger, stakes, panel = c.handle, c.challenger, c.stakes, c.panel
    assert cheater not in panel and len(panel) == 3

    finalized = _drive(net, handle)

    resolved = _events(net, "ChallengeResolved", handle)
    assert len(resolved) == 1 and resolved[0].args["upheld"] is True
    assert int(resolved[0].args["upholdVotes"]) == 3
    assert TaskResult(int(finalized.args["result"])) is TaskResult.OVERTURNED
    for node in panel:
        seat = _panelist(node).seat(handle.task_id)
        assert seat is not None and seat.judged and seat.upheld is True
        assert seat.stage is PanelStage.DONE
    # The cheater: bond lost, registry stake slashed, an audit failed on its record.
    after = _stakes(net)
    assert after[cheater.address] == stakes[cheater.address] - handle.params.bond
    rep = _reputation_events(net, cheater.address)[-1].args
    assert int(rep["auditsFailed"]) == 1
    # Panelists that voted are paid and keep their stake; the challenger gets its bond back.
    for node in panel:
        assert after[node.address] == stakes[node.address]
        assert node.withdrawn_wei + net.market.balance_of(node.address) > 0
    assert net.market.balance_of(challenger) >= bond


def test_b_an_honest_result_challenged_is_kept(honest_net: Devnet) -> None:
    net = honest_net
    honest = net.nodes[0]
    c = _challenged(net)
    handle, challenger, stakes, panel = c.handle, c.challenger, c.stakes, c.panel

    finalized = _drive(net, handle)

    resolved = _events(net, "ChallengeResolved", handle)
    assert resolved[0].args["upheld"] is False and int(resolved[0].args["rejectVotes"]) == 3
    assert TaskResult(int(finalized.args["result"])) is TaskResult.ACCEPTED
    rep = _reputation_events(net, honest.address)[-1].args
    assert int(rep["auditsPassed"]) == 1 and int(rep["auditsFailed"]) == 0
    after = _stakes(net)
    assert after[honest.address] == stakes[honest.address]
    # Bond back, bounty earned, plus the winners' share of the lost challenge bond.
    p = handle.params
    assert honest.withdrawn_wei > p.bond + p.bounty_per_replica
    assert net.market.balance_of(challenger) == 0
    for node in panel:
        assert node.withdrawn_wei + net.market.balance_of(node.address) > 0


def test_c_a_panelist_restarted_between_commit_and_reveal_still_reveals(
    cheating_net: Devnet,
) -> None:
    net = cheating_net
    c = _challenged(net)
    handle, stakes, panel = c.handle, c.stakes, c.panel
    net.step()  # every panelist commits; the last one may reveal at once
    challenge = net.market.challenge_of(handle.task_id)
    assert challenge is not None
    waiting = [
        a for a, v in zip(challenge.panel, challenge.votes, strict=True) if v is VoteState.COMMITTED
    ]
    assert waiting, "no panelist is between commit and reveal"
    index = next(i for i, n in enumerate(net.nodes) if n.address.lower() == waiting[0].lower())
    restarted = net.restart_node(index)

    _drive(net, handle)

    revealed = {str(e.args["panelist"]).lower() for e in _events(net, "VoteRevealed", handle)}
    assert restarted.address.lower() in revealed
    assert {n.address.lower() for n in panel} == revealed
    assert _stakes(net)[restarted.address] == stakes[restarted.address]
    assert all(int(e.args["slashed"]) == 0 for e in _reputation_events(net, restarted.address))


def test_d_garbage_evidence_does_not_stop_the_panel(cheating_net: Devnet) -> None:
    net = cheating_net
    c = _challenged(net, lambda net, _: net.store.put(b'{"kind": "not evidence", [[[['))
    handle, panel = c.handle, c.panel

    finalized = _drive(net, handle)

    assert _events(net, "ChallengeResolved", handle)[0].args["upheld"] is True
    assert TaskResult(int(finalized.args["result"])) is TaskResult.OVERTURNED
    for node in panel:
        seat = _panelist(node).seat(handle.task_id)
        assert seat is not None and seat.judged and seat.upheld is True


def test_a_silent_panelist_is_waited_for_then_slashed(cheating_net: Devnet) -> None:
    """The devnet's clock moves to the vote deadlines, so stepping alone ends the challenge."""
    net = cheating_net
    c = _challenged(net)
    handle, stakes = c.handle, c.stakes
    silent, *voters = c.panel
    silent.duties.clear()
    challenge = net.market.challenge_of(handle.task_id)
    assert challenge is not None

    _drive(net, handle)

    resolved = _events(net, "ChallengeResolved", handle)[0]
    assert resolved.args["upheld"] is True and int(resolved.args["upholdVotes"]) == 2
    # Nobody resolved before the reveal deadline: one vote was still missing.
    assert net.chain.block_timestamp() > challenge.reveal_by
    taken = net.market.challenge_bond // 3
    assert _stakes(net)[silent.address] == stakes[silent.address] - taken
    assert int(_reputation_events(net, silent.address)[-1].args["slashed"]) == 1
    for node in voters:
        assert _stakes(net)[node.address] == stakes[node.address]


def test_a_store_outage_is_retried_and_a_failing_duty_never_stops_a_node(
    cheating_net: Devnet, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = cheating_net
    c = _challenged(net)
    handle, panel = c.handle, c.panel

    class Broken:
        def tick(self) -> int:
            raise RuntimeError("a bug in some duty")

    panel[0].duties.insert(0, Broken())
    real_get = net.store.get
    outages = {"left": 6}

    def flaky_get(cid: str, *, max_bytes: int | None = None) -> bytes:
        if outages["left"] > 0:
            outages["left"] -= 1
            raise StoreUnavailable("the IPFS daemon is restarting")
        return real_get(cid, max_bytes=max_bytes)

    monkeypatch.setattr(net.store, "get", flaky_get)

    _drive(net, handle)

    assert outages["left"] == 0
    resolved = _events(net, "ChallengeResolved", handle)[0]
    assert resolved.args["upheld"] is True and int(resolved.args["upholdVotes"]) == 3


def test_the_requester_waiting_on_an_overturned_task_is_told_why(cheating_net: Devnet) -> None:
    net = cheating_net
    handle = _revealed_task(net)
    net.market.challenge(handle.params, _evidence(net, handle), sender=_funded(net))
    with pytest.raises(NoQuorum, match="overturned: a challenge panel found it forged"):
        net.wait(handle, timeout=120)
    assert _events(net, "TaskFinalized", handle)


def test_a_panel_whose_store_stays_down_votes_the_default_at_the_last_call(
    cheating_net: Devnet, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = cheating_net
    c = _challenged(net)
    handle, stakes, panel = c.handle, c.stakes, c.panel
    challenge = net.market.challenge_of(handle.task_id)
    assert challenge is not None

    def down(cid: str, *, max_bytes: int | None = None) -> bytes:
        raise StoreUnavailable("the IPFS daemon is down")

    monkeypatch.setattr(net.store, "get", down)
    net.step()  # nobody can re-score yet: every panelist waits and retries
    assert all(_panelist(n).seat(handle.task_id).stage is PanelStage.DRAWN for n in panel)  # type: ignore[union-attr]

    finalized = _drive(net, handle)

    # The default (reject) at the last call, before voteBy: nobody silent, nobody slashed.
    resolved = _events(net, "ChallengeResolved", handle)[0]
    assert resolved.args["upheld"] is False and int(resolved.args["rejectVotes"]) == 3
    assert TaskResult(int(finalized.args["result"])) is TaskResult.ACCEPTED
    commits = _events(net, "VoteCommitted", handle)
    assert all(net.chain.block_timestamp(e.block_number) <= challenge.vote_by for e in commits)
    for node in panel:
        seat = _panelist(node).seat(handle.task_id)
        assert seat is not None and not seat.judged and "store is down" in seat.reason
        assert _stakes(net)[node.address] == stakes[node.address]


class _NoContextCheck:
    """A provider's model that says every prompt fits: a cheater that reveals a result for a
    task no honest model can re-score (its prompt overflows the context)."""

    def __init__(self, inner: object) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def tokenize(self, text: str, *args: object, **kwargs: object) -> list[int]:
        return [1]


def test_a_task_the_panel_cannot_rescore_gets_the_default_vote_not_silence(
    cheating_net: Devnet,
) -> None:
    net = cheating_net
    net.nodes[0].llm = _NoContextCheck(net.nodes[0].llm)  # type: ignore[assignment]
    handle = net.delegate(
        "word " * 800,  # thousands of tokens: over every panelist's 512-token context
        assignee=net.nodes[0].address,
        timeouts=_WINDOW,
        params=GenerationParams(max_tokens=12),
    )
    for _ in range(20):
        if _events(net, "ResultRevealed", handle):
            break
        net.step()
    assert _events(net, "ResultRevealed", handle)
    stakes = _stakes(net)
    net.market.challenge(handle.params, _evidence(net, handle), sender=_funded(net))
    panel = _panel(net, handle)

    finalized = _drive(net, handle)

    resolved = _events(net, "ChallengeResolved", handle)[0]
    assert resolved.args["upheld"] is False and int(resolved.args["rejectVotes"]) == 3
    assert TaskResult(int(finalized.args["result"])) is TaskResult.ACCEPTED
    for node in panel:
        seat = _panelist(node).seat(handle.task_id)
        assert seat is not None and not seat.judged and "context" in seat.reason
        assert _stakes(net)[node.address] == stakes[node.address]


def test_a_node_drawn_for_many_panels_rescores_a_few_a_tick_and_still_votes_on_all(
    honest_net: Devnet,
) -> None:
    """A flood of challenges must not turn one node tick into dozens of re-scores (its own
    tasks wait for the tick to end), nor cost any panelist its vote."""
    net = honest_net
    handles = [
        net.delegate(
            f"Say hi {i}",
            assignee=net.nodes[0].address,
            timeouts=_WINDOW,
            params=GenerationParams(max_tokens=12),
        )
        for i in range(4)
    ]
    for _ in range(30):
        if all(_events(net, "ResultRevealed", h) for h in handles):
            break
        net.step()
    challenger = _funded(net)
    for h in handles:
        net.market.challenge(h.params, _evidence(net, h), sender=challenger)
    # Four panels of three from the four other nodes: someone sits on at least three.
    busiest = max(net.nodes, key=lambda n: sum(n in _panel(net, h) for h in handles))
    drawn = [h for h in handles if busiest in _panel(net, h)]
    assert len(drawn) >= 3
    panelist = _panelist(busiest)

    busiest.tick()

    judged = [h for h in drawn if panelist.seat(h.task_id).stage is not PanelStage.DRAWN]  # type: ignore[union-attr]
    assert len(judged) == panelist.judgements_per_tick < len(drawn)
    for h in handles:
        _drive(net, h)
        resolved = _events(net, "ChallengeResolved", h)[0]
        assert resolved.args["upheld"] is False and int(resolved.args["rejectVotes"]) == 3
    for h in drawn:
        seat = panelist.seat(h.task_id)
        assert seat is not None and seat.judged and seat.stage is PanelStage.DONE


def test_a_garbage_seat_file_does_not_silence_the_panelist_on_its_other_seats(
    cheating_net: Devnet,
) -> None:
    net = cheating_net
    for node in net.nodes:
        folder = _panelist(node).seats.path
        (folder / ("0x" + "ab" * 32 + ".json")).write_bytes(b"[" * 200_000)
        (folder / ("0x" + "cd" * 32 + ".json")).write_text('{"task_id": "0xabc"}')
    c = _challenged(net)

    _drive(net, c.handle)

    resolved = _events(net, "ChallengeResolved", c.handle)[0]
    assert resolved.args["upheld"] is True and int(resolved.args["upholdVotes"]) == 3


def test_evidence_that_is_not_in_the_store_is_never_waited_for(
    cheating_net: Devnet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On IPFS a missing block costs a full fetch timeout: evidence, which never decides a
    vote, must not cost a panelist (and the node's own tasks) that wait on every judgement."""
    net = cheating_net
    absent = compute_cid(b"evidence nobody stored")
    fetched: list[str] = []
    real_get = net.store.get

    def counting_get(cid: str, *, max_bytes: int | None = None) -> bytes:
        fetched.append(cid)
        return real_get(cid, max_bytes=max_bytes)

    monkeypatch.setattr(net.store, "get", counting_get)
    c = _challenged(net, lambda _net, _handle: absent)

    _drive(net, c.handle)

    resolved = _events(net, "ChallengeResolved", c.handle)[0]
    assert resolved.args["upheld"] is True and int(resolved.args["upholdVotes"]) == 3
    assert absent not in fetched


def test_a_rescore_that_raises_anything_still_gets_a_vote_in(
    cheating_net: Devnet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever hostile content makes the re-score raise, a panelist retrying it every tick
    would miss the vote and be slashed: it votes the default instead."""
    net = cheating_net

    def broken(*_args: object, **_kwargs: object) -> None:
        raise IndexError("a re-score bug some crafted result reaches")

    monkeypatch.setattr("chefsplan_agents.verify._judge.rescore_result", broken)
    c = _challenged(net)

    _drive(net, c.handle)

    resolved = _events(net, "ChallengeResolved", c.handle)[0]
    assert resolved.args["upheld"] is False and int(resolved.args["rejectVotes"]) == 3
    for node in c.panel:
        seat = _panelist(node).seat(c.handle.task_id)
        assert seat is not None and not seat.judged and "re-score bug" in seat.reason
        assert _stakes(net)[node.address] == c.stakes[node.address]


def test_a_garbage_file_where_a_new_seat_goes_does_not_stop_the_panelist(
    cheating_net: Devnet,
) -> None:
    net = cheating_net
    handle = _revealed_task(net)
    for node in net.nodes:
        (_panelist(node).seats.path / f"0x{handle.task_id.hex()}.json").write_text("{garbage")
    net.market.challenge(handle.params, _evidence(net, handle), sender=_funded(net))

    _drive(net, handle)

    resolved = _events(net, "ChallengeResolved", handle)[0]
    assert resolved.args["upheld"] is True and int(resolved.args["upholdVotes"]) == 3
