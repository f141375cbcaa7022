"""Gas of a whole task lifecycle on TaskMarket, beside Ritual Infernet's published reference.

Deploys AgentRegistry + TaskMarket on the in-process EVM (web3 ``EthereumTesterProvider``,
py-evm, Prague rules) and runs complete lifecycles, counting every transaction a task needs:
the requester's ``postTask``, every provider transaction (claim, commit, reveal), the
settlement and each provider's payout. One-time set-up (deploys, registrations) is not counted.

The last replica to commit may skip its commitment and reveal straight from its claim (every
other result is already fixed by a commitment). Lifecycles:

- ``1 replica, fast``: quorum 1, ``challengeWindow = 0`` — ``postTask``; ``claim``;
  ``revealAndFinalize`` from the claim (the reveal settles the task and pays the provider).
- ``1 replica, fast, commitment in the claim``: as fast, with the commitment carried by
  ``claim`` and checked by the reveal (the cheapest path before reveals from the claim).
- ``1 replica, fast, claim then commit``: as fast, with a ``commit`` between ``claim`` and
  the checked ``revealAndFinalize`` (a provider that claims before it knows its output, as a
  node does, paid this before reveals from the claim).
- ``1 replica, optimistic``: quorum 1, ``challengeWindow > 0`` — ``postTask``; ``claim``;
  ``reveal`` from the claim; ``finalize`` by the provider after the window (pays it its share).
- ``1 replica, step by step``: as optimistic, with ``claim``, ``commit`` and a checked
  ``reveal`` as separate transactions.
- ``3 replicas, fast``: quorum 2 — ``postTask``; 2 × ``claim`` with commitment; the third
  ``claim`` without, which then reveals from its claim; a ``reveal``; ``revealAndFinalize`` by
  the last committed replica; 2 × ``withdraw``.
- ``3 replicas, fast, all committed in the claim``: 3 × ``claim`` with commitment; 2 ×
  ``reveal``; ``revealAndFinalize``; 2 × ``withdraw``.
- ``3 replicas, optimistic``: quorum 2 — as fast with the third ``reveal`` instead of
  ``revealAndFinalize``, then ``finalize`` by one provider, 2 × ``withdraw``.
- ``1 replica, assigned``: quorum 1, ``challengeWindow = 0``, ``assignee`` = the provider (the
  requester picked it from the registry) — ``postTask``; ``claimAndFinalize`` once the provider
  has its result (claim, reveal and settlement in one transaction that pays the provider).

- ``1 replica, challenged, upheld by the panel``: as optimistic, then an outsider's
  ``challenge`` (draws 3 panelists from 3 other registered providers), 3 × ``commitVote``,
  3 × ``revealVote`` (2 uphold, 1 reject), ``resolveChallenge``, ``finalize`` by the requester
  (slashes the provider's bond and registry stake), then the challenger's and 2 panelists'
  ``withdraw``.

Every other lifecycle posts open tasks (``assignee`` = the zero address: any active provider).

The baseline is a published number, not a run: Ritual Infernet's create-subscription + deliver
reference of 331,677 gas for one compute request.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from web3 import EthereumTesterProvider, Web3  # noqa: E402
from web3.logs import DISCARD  # noqa: E402

from benchmarks import _report  # noqa: E402
from chefsplan_agents.contracts import load_artifact  # noqa: E402

INFERNET_REFERENCE_GAS = 331_677
GOAL_RATIO = 0.5
ZERO_ADDRESS = "0x" + "00" * 20
ETHER = 10**18
BOUNTY = ETHER // 100
BOND = ETHER // 200
BUNDLE_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
RESULT_CID = "bafkreidon73zkcrwdb5iafqtijxildoonbwnpv7dyd6ef3qdgads2jc4su"
EVIDENCE_CID = "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"


@dataclass
class Lifecycle:
    """The transactions of one task, in order."""

    name: str
    steps: list[tuple[str, int]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(gas for _, gas in self.steps)


class Bench:
    """A fresh chain with the registry and market deployed and providers registered."""

    def __init__(self) -> None:
        self.w3 = Web3(EthereumTesterProvider())
        self.accounts = list(self.w3.eth.accounts)
        self.deployer, self.requester = self.accounts[:2]
        self.providers = sorted(self.accounts[3:6], key=lambda a: int(a, 16))
        self.registry = self._deploy("AgentRegistry", ETHER // 10, 3600)
        self.market = self._deploy("TaskMarket", self.registry.address, BOND)
        self._send(self.registry.functions.setMarket(self.market.address), self.deployer)
        for i, provider in enumerate(self.providers):
            self._send(
                self.registry.functions.register(
                    f"did:key:z6MkBenchProvider{i}", BUNDLE_CID, b"\x11" * 32
                ),
                provider,
                value=ETHER // 10,
            )
        self.nonce = 0

    def _deploy(self, name: str, *args: Any) -> Any:
        art = load_artifact(name)
        factory = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        tx = factory.constructor(*args).transact({"from": self.deployer})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx)
        return self.w3.eth.contract(address=receipt["contractAddress"], abi=art["abi"])

    def _send(self, call: Any, sender: str, value: int = 0) -> int:
        return int(self._receipt(call, sender, value)["gasUsed"])

    def _receipt(self, call: Any, sender: str, value: int = 0) -> Any:
        tx = call.transact({"from": sender, "value": value})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx)
        if receipt["status"] != 1:
            raise RuntimeError(f"transaction reverted: {call.fn_name}")
        return receipt

    def params(
        self, replicas: int, quorum: int, window: int, assignee: str = ZERO_ADDRESS
    ) -> tuple[Any, ...]:
        self.nonce += 1
        now = int(self.w3.eth.get_block("latest")["timestamp"])
        return (
            self.requester,
            assignee,
            Web3.keccak(text=f"bundle {self.nonce}"),
            replicas,
            quorum,
            BOUNTY,
            BOND,
            now + 600,  # claimDeadline
            300,  # commitTimeout
            now + 1800,  # revealDeadline
            window,  # challengeWindow
            self.nonce,
        )

    def run(self, name: str, replicas: int, quorum: int, *, window: int, commit: str) -> Lifecycle:
        """Run one lifecycle where every provider reveals the same output.

        ``commit`` is ``"claim"`` (every commitment carried by ``claim``), ``"split"`` (``claim``
        then ``commit``) or ``"last_reveals"`` (as ``"claim"``, but the last provider claims
        without a commitment and reveals from its claim, first, since nobody else may reveal
        before every slot counts as committed).
        """
        life = Lifecycle(name)
        fn = self.market.functions
        p = self.params(replicas, quorum, window)

        def step(label: str, call: Any, who: str, value: int = 0) -> None:
            life.steps.append((label, self._send(call, who, value)))

        step("postTask", fn.postTask(p, BUNDLE_CID), self.requester, BOUNTY * replicas)
        output = Web3.keccak(text=f"the answer {self.nonce}")
        cid_hash = Web3.keccak(text=RESULT_CID)
        workers = self.providers[:replicas]
        salts = {w: Web3.keccak(text=f"salt {w} {self.nonce}") for w in workers}
        commits = {w: fn.commitmentOf(output, salts[w], w).call() for w in workers}
        uncommitted = workers[-1] if commit == "last_reveals" else None
        for w in workers:
            if commit == "split":
                step("claim", fn.claim(p, b"\0" * 32), w, BOND)
                step("commit", fn.commit(p, commits[w]), w, 0)
            elif w == uncommitted:
                step("claim", fn.claim(p, b"\0" * 32), w, BOND)
            else:
                step("claim+commit", fn.claim(p, commits[w]), w, BOND)
        # The replica revealing from its claim goes first; the last reveal settles (window 0).
        order = [w for w in workers if w == uncommitted] + [w for w in workers if w != uncommitted]
        reveals = [(w, output, cid_hash) for w in workers]

        def label(w: str, call: str) -> str:
            return f"{call} from the claim" if w == uncommitted else call

        if window == 0:
            for w in order[:-1]:
                step(label(w, "reveal"), fn.reveal(p, output, RESULT_CID, salts[w]), w, 0)
            last = order[-1]
            step(
                label(last, "revealAndFinalize") + " (pays the caller)",
                fn.revealAndFinalize(p, output, RESULT_CID, salts[last], reveals, ""),
                last,
                0,
            )
            paid_later = order[:-1]
        else:
            for w in order:
                step(label(w, "reveal"), fn.reveal(p, output, RESULT_CID, salts[w]), w, 0)
            settle = int(fn.settleTime(p).call())
            self.w3.testing.timeTravel(settle)  # type: ignore[attr-defined]
            # A winner settles (and is paid its own share in that call); the others withdraw.
            step("finalize (pays the caller)", fn.finalize(p, reveals, RESULT_CID), workers[-1], 0)
            paid_later = workers[:-1]
        for w in paid_later:
            step("withdraw", fn.withdraw(), w, 0)
        return life

    def run_assigned(self, name: str) -> Lifecycle:
        """Run a task assigned to one provider: ``postTask``, then its ``claimAndFinalize``."""
        life = Lifecycle(name)
        fn = self.market.functions
        provider = self.providers[0]
        p = self.params(1, 1, 0, assignee=provider)
        post = fn.postTask(p, BUNDLE_CID)
        life.steps.append(("postTask (assignee set)", self._send(post, self.requester, BOUNTY)))
        output = Web3.keccak(text=f"the answer {self.nonce}")
        before = self.w3.eth.get_balance(provider)
        receipt = self._receipt(fn.claimAndFinalize(p, output, RESULT_CID), provider, BOND)
        gas = int(receipt["gasUsed"])
        life.steps.append(("claimAndFinalize (pays the caller)", gas))
        # One transaction: the bond went in and bounty + bond came out, and the task is settled.
        fee = gas * int(receipt["effectiveGasPrice"])
        settled = fn.taskState(fn.taskIdOf(p).call()).call()[0] == 0
        if self.w3.eth.get_balance(provider) - before != BOUNTY - fee or not settled:
            raise RuntimeError("claimAndFinalize did not settle the task and pay its provider")
        return life

    def run_challenged(self, name: str) -> Lifecycle:
        """A one-replica task whose result a panel overturns (see the module docstring)."""
        life = Lifecycle(name)
        fn = self.market.functions
        panel_pool = self.accounts[6:9]
        for i, account in enumerate(panel_pool):
            if not self.registry.functions.isActive(account).call():
                reg = self.registry.functions.register(
                    f"did:key:z6MkBenchPanel{i}", BUNDLE_CID, b"\x22" * 32
                )
                self._send(reg, account, ETHER // 10)
        challenger = self.accounts[9]
        provider = self.providers[0]
        p = self.params(1, 1, 600)

        def step(label: str, call: Any, who: str, value: int = 0) -> Any:
            receipt = self._receipt(call, who, value)
            life.steps.append((label, int(receipt["gasUsed"])))
            return receipt

        step("postTask", fn.postTask(p, BUNDLE_CID), self.requester, BOUNTY)
        output = Web3.keccak(text=f"the answer {self.nonce}")
        step("claim", fn.claim(p, b"\0" * 32), provider, BOND)
        step("reveal from the claim", fn.reveal(p, output, RESULT_CID, b"\0" * 32), provider)
        receipt = step(
            "challenge (draws the panel)", fn.challenge(p, EVIDENCE_CID), challenger, BOND
        )
        (drawn,) = self.market.events.PanelDrawn().process_receipt(receipt, errors=DISCARD)
        panel = list(drawn["args"]["panel"])
        task_id = fn.taskIdOf(p).call()
        votes = dict(zip(panel, (True, True, False), strict=True))
        salts = {m: Web3.keccak(text=f"vote {m} {self.nonce}") for m in panel}
        for m in panel:
            c = fn.voteCommitmentOf(votes[m], salts[m], m).call()
            step("commitVote", fn.commitVote(task_id, c), m)
        for m in panel:
            step("revealVote", fn.revealVote(task_id, votes[m], salts[m]), m)
        step("resolveChallenge", fn.resolveChallenge(p), challenger)
        self.w3.testing.timeTravel(int(fn.settleTime(p).call()))  # type: ignore[attr-defined]
        reveals = [(provider, output, Web3.keccak(text=RESULT_CID))]
        step("finalize (upheld; slashes stake)", fn.finalize(p, reveals, ""), self.requester)
        for who in [challenger, *[m for m in panel if votes[m]]]:
            step("withdraw", fn.withdraw(), who)
        return life


def measure() -> list[Lifecycle]:
    """Run every lifecycle once on one chain (providers registered beforehand)."""
    bench = Bench()
    return [
        bench.run("1 replica, fast (window 0)", 1, 1, window=0, commit="last_reveals"),
        bench.run("1 replica, fast, commitment in the claim", 1, 1, window=0, commit="claim"),
        bench.run("1 replica, fast, claim then commit", 1, 1, window=0, commit="split"),
        bench.run("1 replica, optimistic (window 60 s)", 1, 1, window=60, commit="last_reveals"),
        bench.run("1 replica, step by step", 1, 1, window=60, commit="split"),
        bench.run("3 replicas / quorum 2, fast", 3, 2, window=0, commit="last_reveals"),
        bench.run(
            "3 replicas / quorum 2, fast, all committed in the claim",
            3,
            2,
            window=0,
            commit="claim",
        ),
        bench.run("3 replicas / quorum 2, optimistic", 3, 2, window=60, commit="last_reveals"),
        bench.run_assigned("1 replica, assigned (window 0)"),
        bench.run_challenged("1 replica, challenged, upheld by the panel"),
    ]


def main() -> int:
    args = _report.parser(__doc__.splitlines()[0]).parse_args()
    lives = measure()
    goal = int(GOAL_RATIO * INFERNET_REFERENCE_GAS)
    rows: list[list[Any]] = []
    for life in lives:
        for label, gas in life.steps:
            rows.append([life.name, label, f"{gas:,}", ""])
        ratio = life.total / INFERNET_REFERENCE_GAS
        rows.append(
            [life.name, f"**total ({len(life.steps)} tx)**", f"**{life.total:,}**", f"{ratio:.3f}"]
        )
    rows.append(
        ["Ritual Infernet (published)", "create + deliver", f"{INFERNET_REFERENCE_GAS:,}", "1.000"]
    )
    by = {life.name: life.total for life in lives}
    (
        one_fast,
        one_claim,
        one_commit,
        one_opt,
        one_split,
        three_fast,
        three_claim,
        three_opt,
        one_assigned,
        challenged,
    ) = (life.total for life in lives)
    challenge_steps = dict(reversed(lives[-1].steps))  # first of each label
    cheapest = min(lives[:-1], key=lambda life: life.total)
    cheapest_ratio = cheapest.total / INFERNET_REFERENCE_GAS
    summary = {
        "reference_gas": INFERNET_REFERENCE_GAS,
        "goal_gas": goal,
        "lifecycle_1_replica_gas": one_fast,
        "lifecycle_1_replica_ratio": round(one_fast / INFERNET_REFERENCE_GAS, 4),
        "lifecycle_1_replica_commitment_in_claim_gas": one_claim,
        "lifecycle_1_replica_commitment_in_claim_ratio": round(
            one_claim / INFERNET_REFERENCE_GAS, 4
        ),
        "lifecycle_1_replica_claim_then_commit_gas": one_commit,
        "lifecycle_1_replica_optimistic_gas": one_opt,
        "lifecycle_1_replica_optimistic_ratio": round(one_opt / INFERNET_REFERENCE_GAS, 4),
        "lifecycle_1_replica_step_by_step_gas": one_split,
        "lifecycle_3_replicas_gas": three_fast,
        "lifecycle_3_replicas_ratio": round(three_fast / INFERNET_REFERENCE_GAS, 4),
        "lifecycle_3_replicas_all_committed_in_claim_gas": three_claim,
        "lifecycle_3_replicas_optimistic_gas": three_opt,
        "lifecycle_3_replicas_optimistic_ratio": round(three_opt / INFERNET_REFERENCE_GAS, 4),
        "lifecycle_1_replica_assigned_gas": one_assigned,
        "lifecycle_1_replica_assigned_ratio": round(one_assigned / INFERNET_REFERENCE_GAS, 4),
        "lifecycle_1_replica_challenged_upheld_gas": challenged,
        "challenge_tx_gas": challenge_steps["challenge (draws the panel)"],
        "commit_vote_gas": challenge_steps["commitVote"],
        "reveal_vote_gas": challenge_steps["revealVote"],
        "resolve_challenge_gas": challenge_steps["resolveChallenge"],
        "finalize_upheld_gas": challenge_steps["finalize (upheld; slashes stake)"],
        "cheapest_lifecycle": cheapest.name,
        "cheapest_gas": cheapest.total,
        "cheapest_ratio": round(cheapest_ratio, 4),
        "goal_met_1_replica": cheapest.total <= goal,
        "goal_met_1_replica_open": min(one_fast, one_claim) <= goal,
        "lifecycles": by,
    }
    met = "met" if cheapest.total <= goal else "not met"
    notes = (
        f"Goal: the cheapest 1-replica lifecycle ≤ {GOAL_RATIO} × {INFERNET_REFERENCE_GAS:,} = "
        f"{goal:,} gas; ratio = our total / Infernet's create+deliver. Every transaction of the "
        "task is counted (21,000 base each); deploys and provider registration are one-time and "
        f'not counted. The goal is {met}: the cheapest path is "{cheapest.name}", '
        f"{cheapest.total:,} gas ({cheapest_ratio:.3f}×). The assigned path "
        f"(postTask, then claimAndFinalize once the provider has its result) costs "
        f"{one_assigned:,} ({one_assigned / INFERNET_REFERENCE_GAS:.3f}×): 2 transactions and "
        "one fresh storage slot (the escrowed task), since the claim, reveal and settlement "
        "share one call and no claim slot is written. An open task, which providers claim "
        "before running the model, needs 3 transactions and a claim slot: its fast path (claim, "
        f"then reveal from the claim and settle) is {one_fast:,} "
        f"({one_fast / INFERNET_REFERENCE_GAS:.3f}×); claim then commit: {one_commit:,}. "
        "See contracts/README.md for the breakdown."
    )
    _report.report(
        args,
        name="gas",
        title="Gas per task lifecycle (TaskMarket) vs Ritual Infernet",
        columns=["lifecycle", "step", "gas", "ratio vs Infernet"],
        rows=rows,
        summary=summary,
        notes=notes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
