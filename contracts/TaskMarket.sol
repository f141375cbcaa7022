// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {
    AgentRegistry,
    OUTCOME_WON,
    OUTCOME_LOST,
    OUTCOME_SLASHED,
    OUTCOME_AUDIT_PASSED,
    OUTCOME_AUDIT_FAILED
} from "./AgentRegistry.sol";

/// @title TaskMarket — escrowed, redundant, commit-reveal LLM tasks
/// @notice Interface summary
///
///  Constructor: `constructor(address registry, uint256 challengeBond)`. Nobody decides
///  challenges alone: a panel of staked providers does (see Challenges).
///
///  A task is identified by `taskId = keccak256(abi.encode(block.chainid, address(this),
///  params))` where `params` is the immutable `TaskParams` struct given to `postTask` (and
///  emitted in `TaskPosted`). Only the task's mutable state is stored; every later call passes
///  the same `params` as calldata and the contract recomputes the id, so a wrong or tampered
///  struct is an `UnknownTask`. Pick a fresh `nonce` per task.
///
///  Horizons: `claimDeadline > now`, `revealDeadline > claimDeadline + commitTimeout`,
///  `revealDeadline <= now + MAX_TASK_HORIZON` (30 days, `DeadlineTooFar`),
///  `0 < commitTimeout <= MAX_COMMIT_TIMEOUT` (7 days, `CommitTimeoutTooLong`),
///  `challengeWindow <= MAX_CHALLENGE_WINDOW` (7 days, `ChallengeWindowTooLong`): the terms
///  cannot lock a claimant's bond for more than 37 days (a pending challenge aside).
///
///  Requester:
///   - `postTask(TaskParams p, string bundleCid) payable returns (bytes32 taskId)`,
///     `p.requester == msg.sender`, `msg.value == p.bountyPerReplica * p.replicas`.
///   - `cancel(TaskParams p)` while the task was never claimed.
///   - `p.assignee` names the one provider that may claim the task (zero: any active
///     provider). An assigned task has one replica.
///  Provider (active in the registry, one replica per provider per task, the assignee only
///  when the task names one):
///   - `claim(TaskParams p, bytes32 commitment) payable`, `msg.value == p.bond`; a non-zero
///     `commitment` claims and commits in one transaction (`ReplicaClaimed` then carries it),
///     zero commits later (`ResultCommitted`).
///   - `commit(TaskParams p, bytes32 commitment)` before `claimedAt + p.commitTimeout`.
///     `commitment = keccak256(abi.encode(outputHash, salt, provider))` (see `commitmentOf`).
///   - `reveal(TaskParams p, bytes32 outputHash, string resultCid, bytes32 salt)` once every
///     replica committed or the commit phase (`p.claimDeadline + p.commitTimeout`) ended, and
///     until `p.revealDeadline`. A reveal that does not match the commitment reverts.
///     The last replica to commit may skip its commitment and reveal straight from its claim
///     (before its commit deadline): once every other replica has committed there is nothing
///     left to copy. It then counts as committed and revealed, and `salt` is unused. With one
///     replica this makes the lifecycle claim → revealAndFinalize.
///   - `revealAndFinalize(p, outputHash, resultCid, salt, Reveal[] reveals, string winningCid)`:
///     the last reveal of a task whose settlement time is already reached (a task with
///     `challengeWindow == 0`) settles it in the same transaction, as `finalize` does.
///   - `claimAndFinalize(p, outputHash, resultCid) payable`, `msg.value == p.bond`: claim,
///     reveal and settle an assigned task (`NotAssignedTask` for an open one) with one replica
///     and `challengeWindow == 0` in one transaction, sent by the assignee after running it
///     (nobody else may claim, so nothing to copy and no commitment). The caller is paid
///     bounty + bond at once.
///  Anyone:
///   - `finalize(TaskParams p, Reveal[] reveals, string resultCid)` at or after `settleTime(p)`.
///     `reveals` lists every currently claimed replica in ascending provider address order with
///     the `outputHash` and `keccak256(bytes(resultCid))` it revealed (ignored for replicas that
///     did not reveal); `resultCid` is the CID revealed by one winner ("" when no quorum).
///     Whatever the settlement owes the caller itself is sent to it at the end of the call
///     (the caller pulling its own share); everyone else is credited for `withdraw()`.
///   - `reopen(TaskParams p, address provider)` after a claimed replica missed its commit
///     deadline: its bond is slashed to the requester and the slot is free again.
///   - `challenge(TaskParams p, string evidenceCid) payable`, `msg.value == challengeBond`,
///     `evidenceCid` (1 to MAX_EVIDENCE_CID bytes, emitted in `TaskChallenged`) the CID of the
///     challenger's evidence (a re-score verdict naming the failed check), once reveals closed
///     (every replica revealed or `p.revealDeadline` passed) and before `settleTime(p)`
///     (requires `p.challengeWindow > 0`). Not by a provider that ever claimed a replica of
///     the task (`SelfChallenge`). Draws the panel and freezes settlement until
///     `resolveChallenge`.
///   - `resolveChallenge(TaskParams p)` once every panelist revealed its vote or the vote
///     reveal deadline passed: the decision, or the default outcome.
///   - `withdraw()` pays the caller's whole balance (pull payments).
///  Panelist: `commitVote(bytes32 taskId, bytes32 commitment)` until `voteBy`,
///   `commitment = keccak256(abi.encode(upheld, salt, panelist))` (see `voteCommitmentOf`);
///   `revealVote(bytes32 taskId, bool upheld, bytes32 salt)` once every panelist committed or
///   `voteBy` passed, until `revealBy`.
///
///  Challenges: `challenge` draws PANEL_SIZE distinct panelists pseudo-randomly from the
///  registry (`keccak256(blockhash(block.number - 1), taskId, challenger)`):
///  active providers other than the requester, the challenger and every provider that claimed
///  a replica. Each re-scores the revealed outputs and votes by commit-reveal (`VOTE_PERIOD`
///  to commit, then `VOTE_REVEAL_PERIOD` to reveal). The majority of revealed votes decides;
///  no revealed vote or a tie is the default outcome, LAPSED: the challenge counts as rejected
///  for the providers (settlement proceeds as if unchallenged) and the challenger gets its bond
///  back, since the panel, not the challenger, failed. A panelist that does not reveal loses
///  `challengeBond / PANEL_SIZE` of registry stake (to the requester, for the delay) and gets
///  a `slashed` mark. Upheld: the challenger gets its bond back; from the overturned
///  majority's bonds the panelists that voted to uphold share at most `challengeBond / 2`, the
///  challenger is rewarded at most `challengeBond / 2`, the requester gets the rest, plus up to
///  `p.bond` of each majority provider's registry stake (`AgentRegistry.slashStake`).
///  Rejected: the panelists that voted to reject share `challengeBond / 2`, the winners the
///  rest of the challenge bond.
///
///  Settlement (finalize): the output hash revealed by at least `p.quorum` replicas wins
///  (`2 * quorum > replicas`, so at most one can). Winners are credited bounty + bond; revealed
///  losers and no-shows are slashed (bond to the requester); the requester gets back every
///  bounty not earned. No quorum: the requester gets the whole bounty back and revealed
///  providers their bonds. Challenge upheld: see Challenges (the bounty goes back to the
///  requester). Challenge rejected: the challenge bond less the panel's share is shared by the
///  winners (remainder to the requester).
///
///  Views: `taskIdOf`, `commitmentOf`, `voteCommitmentOf`, `taskState`, `replicaOf`,
///   `settleTime`, `challengerOf`, `challengeOf`, `balanceOf`, `registry`, `challengeBond`,
///   `MAX_REPLICAS`, `MAX_TASK_HORIZON`, `MAX_COMMIT_TIMEOUT`, `MAX_CHALLENGE_WINDOW`,
///   `PANEL_SIZE`, `MAX_EVIDENCE_CID`, `VOTE_PERIOD`, `VOTE_REVEAL_PERIOD`.
///  Events: TaskPosted, ReplicaClaimed, ResultCommitted, ResultRevealed, ReplicaReopened,
///   TaskChallenged, PanelDrawn, VoteCommitted, VoteRevealed, ChallengeResolved, TaskFinalized,
///   TaskCancelled, Withdrawn.
contract TaskMarket {
    // ------------------------------------------------------------------ types

    /// @notice The immutable terms of a task; its hash is the task id.
    struct TaskParams {
        address requester;
        address assignee; // zero: any active provider; else only it may claim (replicas == 1)
        bytes32 bundleHash; // hash of the canonical TaskBundle bytes behind the bundle CID
        uint8 replicas; // 1 ..= MAX_REPLICAS
        uint8 quorum; // replicas / 2 < quorum <= replicas
        uint96 bountyPerReplica; // paid to each winning replica
        uint96 bond; // posted by each claiming provider
        uint64 claimDeadline; // unix time; no claims after it
        uint64 commitTimeout; // seconds a claimer has to commit (<= MAX_COMMIT_TIMEOUT)
        // unix time; no reveals after it (> claimDeadline + commitTimeout, <= posting time +
        // MAX_TASK_HORIZON)
        uint64 revealDeadline;
        uint64 challengeWindow; // seconds from reveals closing to settlement (<= 7 days)
        uint64 nonce; // makes equal terms distinct tasks
    }

    /// @notice What a provider revealed, as the settlement needs it.
    struct Reveal {
        address provider;
        bytes32 outputHash;
        bytes32 resultCidHash; // keccak256(bytes(resultCid))
    }

    /// @notice Mutable task state, one storage slot. Deleted on settlement or cancellation.
    struct TaskState {
        uint8 status; // TASK_NONE or TASK_OPEN
        uint8 claimed; // replicas currently claimed (reopened ones are not counted)
        uint8 committed; // replicas that committed (revealed ones included)
        uint8 revealed; // replicas that revealed
        uint8 challenge; // CHALLENGE_*
        bool everClaimed; // a claim happened (cancel is no longer allowed)
        uint40 readyAt; // when the last replica revealed (0 until then)
    }

    /// @notice One provider's replica of a task, one storage slot.
    struct Replica {
        uint8 state; // REPLICA_*
        uint40 commitBy; // commit deadline of this claim
        bytes24 tag; // commitment, then keccak(outputHash, resultCidHash) once revealed
    }

    uint8 public constant TASK_NONE = 0;
    uint8 public constant TASK_OPEN = 1;

    uint8 public constant REPLICA_NONE = 0;
    uint8 public constant REPLICA_CLAIMED = 1;
    uint8 public constant REPLICA_COMMITTED = 2;
    uint8 public constant REPLICA_REVEALED = 3;
    uint8 public constant REPLICA_REOPENED = 4;

    uint8 public constant CHALLENGE_NONE = 0;
    uint8 public constant CHALLENGE_PENDING = 1;
    uint8 public constant CHALLENGE_UPHELD = 2;
    uint8 public constant CHALLENGE_REJECTED = 3;
    /// The panel did not decide (no revealed vote, or a tie): rejected without cost.
    uint8 public constant CHALLENGE_LAPSED = 4;

    uint8 public constant VOTE_NONE = 0;
    uint8 public constant VOTE_COMMITTED = 1;
    uint8 public constant VOTE_UPHOLD = 2;
    uint8 public constant VOTE_REJECT = 3;

    uint8 public constant RESULT_ACCEPTED = 1;
    uint8 public constant RESULT_NO_QUORUM = 2;
    uint8 public constant RESULT_OVERTURNED = 3;

    uint256 public constant MAX_REPLICAS = 16;
    /// @notice Latest `revealDeadline` (and so `claimDeadline`) a task may set, counted from
    /// the block that posts it. With `MAX_CHALLENGE_WINDOW` it bounds how long a claimant's
    /// bond can be locked by the task's terms.
    uint256 public constant MAX_TASK_HORIZON = 30 days;
    /// @notice Longest `commitTimeout`.
    uint256 public constant MAX_COMMIT_TIMEOUT = 7 days;
    /// @notice Longest `challengeWindow`.
    uint256 public constant MAX_CHALLENGE_WINDOW = 7 days;
    /// @notice Panelists drawn per challenge.
    uint256 public constant PANEL_SIZE = 3;
    /// @notice Longest evidence CID a challenge may name, in bytes.
    uint256 public constant MAX_EVIDENCE_CID = 128;
    /// @notice Seconds from a challenge to the end of vote commits (`voteBy`).
    uint256 public constant VOTE_PERIOD = 1 days;
    /// @notice Seconds from `voteBy` to the end of vote reveals (`revealBy`).
    uint256 public constant VOTE_REVEAL_PERIOD = 1 days;
    /// Registry entries examined when drawing a panel (a small or mostly inactive registry
    /// may not yield a panel: `PanelUnavailable`).
    uint256 private constant DRAW_TRIES = 64;

    /// @notice A challenge and its panel. Deleted on settlement.
    struct Challenge {
        address challenger;
        uint40 voteBy; // last second to commit a vote
        uint40 revealBy; // last second to reveal a vote
        address[PANEL_SIZE] panel;
        bytes32[PANEL_SIZE] commits;
        uint8[PANEL_SIZE] votes; // VOTE_*
    }

    // ------------------------------------------------------------------ events

    event TaskPosted(
        bytes32 indexed taskId, address indexed requester, TaskParams params, string bundleCid
    );
    /// @param commitment The commitment made with the claim (zero: `ResultCommitted` follows).
    event ReplicaClaimed(
        bytes32 indexed taskId, address indexed provider, uint256 commitBy, bytes32 commitment
    );
    event ResultCommitted(bytes32 indexed taskId, address indexed provider, bytes32 commitment);
    event ResultRevealed(
        bytes32 indexed taskId, address indexed provider, bytes32 outputHash, string resultCid
    );
    event ReplicaReopened(bytes32 indexed taskId, address indexed provider, uint256 slashedBond);
    event TaskChallenged(
        bytes32 indexed taskId, address indexed challenger, uint256 bond, string evidenceCid
    );
    event PanelDrawn(
        bytes32 indexed taskId, address[PANEL_SIZE] panel, uint256 voteBy, uint256 revealBy
    );
    event VoteCommitted(bytes32 indexed taskId, address indexed panelist, bytes32 commitment);
    event VoteRevealed(bytes32 indexed taskId, address indexed panelist, bool upheld);
    /// @param outcome CHALLENGE_UPHELD, CHALLENGE_REJECTED or CHALLENGE_LAPSED.
    /// @param upheld Whether the challenge was upheld (outcome == CHALLENGE_UPHELD).
    event ChallengeResolved(
        bytes32 indexed taskId, bool upheld, uint8 outcome, uint256 upholdVotes, uint256 rejectVotes
    );
    /// @param result RESULT_ACCEPTED, RESULT_NO_QUORUM or RESULT_OVERTURNED.
    /// @param outputHash The accepted output hash (zero unless accepted).
    /// @param resultCid The CID revealed by one winner ("" unless accepted).
    /// @param winners Number of replicas paid `payoutPerWinner` (bounty + bond).
    /// @param refund Credited to the requester (unearned bounty + slashed bonds).
    event TaskFinalized(
        bytes32 indexed taskId,
        uint8 result,
        bytes32 outputHash,
        string resultCid,
        uint256 winners,
        uint256 payoutPerWinner,
        uint256 refund
    );
    event TaskCancelled(bytes32 indexed taskId, uint256 refund);
    /// @notice Money left the market: a `withdraw()`, or a settlement paying its caller.
    event Withdrawn(address indexed account, uint256 amount);

    // ------------------------------------------------------------------ errors

    error ZeroAddress();
    error NotRequester(address caller);
    error NotRegistry(address caller);
    error EmptyCid();
    error EvidenceCidTooLong(uint256 length, uint256 maxLength);
    error InvalidReplicas(uint256 replicas, uint256 maxReplicas);
    error InvalidQuorum(uint256 quorum, uint256 replicas);
    error ZeroAmount();
    error InvalidDeadlines();
    error DeadlineTooFar(uint256 revealDeadline, uint256 latest);
    error CommitTimeoutTooLong(uint256 commitTimeout, uint256 maxCommitTimeout);
    error ChallengeWindowTooLong(uint256 challengeWindow, uint256 maxChallengeWindow);
    error NotAssignedTask(bytes32 taskId);
    error WrongValue(uint256 sent, uint256 expected);
    error TaskExists(bytes32 taskId);
    error UnknownTask(bytes32 taskId);
    error NotActiveProvider(address provider);
    error ClaimClosed(uint256 claimDeadline);
    error TaskFull(bytes32 taskId);
    error AlreadyClaimed(bytes32 taskId, address provider);
    error NotAssignee(address caller, address assignee);
    error NotSingleShot(bytes32 taskId);
    error WrongReplicaState(bytes32 taskId, address provider, uint8 state);
    error ZeroCommitment();
    error CommitDeadlinePassed(uint256 commitBy);
    error CommitDeadlineNotPassed(uint256 commitBy);
    error RevealNotOpen(bytes32 taskId);
    error RevealClosed(uint256 revealDeadline);
    error CommitmentMismatch(bytes32 taskId, address provider);
    error TooEarly(uint256 settleTime);
    error ChallengePending(bytes32 taskId);
    error ChallengeClosed(uint256 settleTime);
    error AlreadyChallenged(bytes32 taskId);
    error NoPendingChallenge(bytes32 taskId);
    error ChallengeNotOpen(bytes32 taskId);
    error SelfChallenge(bytes32 taskId, address challenger);
    error PanelUnavailable(bytes32 taskId, uint256 found, uint256 needed);
    error NotPanelist(bytes32 taskId, address caller);
    error VotingClosed(uint256 voteBy);
    error VoteRevealNotOpen(bytes32 taskId);
    error VoteRevealClosed(uint256 revealBy);
    error WrongVoteState(bytes32 taskId, address panelist, uint8 state);
    error VoteMismatch(bytes32 taskId, address panelist);
    error ResolveTooEarly(uint256 revealBy);
    error SlashMismatch(address provider, uint256 taken, uint256 expected);
    error CancelNotAllowed(bytes32 taskId);
    error BadRevealList(uint256 index);
    error RevealDataMismatch(address provider);
    error ResultCidMismatch();
    error NothingToWithdraw(address account);
    error TransferFailed(address to, uint256 amount);

    // ------------------------------------------------------------------ storage

    AgentRegistry public immutable registry;
    uint256 public immutable challengeBond;

    mapping(bytes32 => TaskState) private _tasks;
    mapping(bytes32 => mapping(address => Replica)) private _replicas;
    mapping(bytes32 => Challenge) private _challenges;
    mapping(address => uint256) private _balances;

    constructor(address registry_, uint256 challengeBond_) {
        if (registry_ == address(0)) revert ZeroAddress();
        if (challengeBond_ == 0) revert ZeroAmount();
        registry = AgentRegistry(registry_);
        challengeBond = challengeBond_;
    }

    /// @notice Slashed registry stake arrives here; nobody else may send plain value.
    receive() external payable {
        if (msg.sender != address(registry)) revert NotRegistry(msg.sender);
    }

    // ------------------------------------------------------------------ requester

    /// @notice Post a task and escrow its whole bounty.
    /// @param p The task's terms; `p.requester` must be the caller.
    /// @param bundleCid CID of the TaskBundle on IPFS (emitted, not stored).
    /// @return taskId `keccak256(abi.encode(block.chainid, address(this), p))`.
    function postTask(TaskParams calldata p, string calldata bundleCid)
        external
        payable
        returns (bytes32 taskId)
    {
        if (p.requester != msg.sender) revert NotRequester(msg.sender);
        if (bytes(bundleCid).length == 0) revert EmptyCid();
        if (p.replicas == 0 || p.replicas > MAX_REPLICAS) {
            revert InvalidReplicas(p.replicas, MAX_REPLICAS);
        }
        // One replica per provider: a task assigned to one provider has one replica.
        if (p.assignee != address(0) && p.replicas != 1) revert InvalidReplicas(p.replicas, 1);
        if (p.quorum > p.replicas || 2 * uint256(p.quorum) <= p.replicas) {
            revert InvalidQuorum(p.quorum, p.replicas);
        }
        if (p.bountyPerReplica == 0 || p.bond == 0) revert ZeroAmount();
        if (
            p.commitTimeout == 0 || p.claimDeadline <= block.timestamp
                || p.revealDeadline <= uint256(p.claimDeadline) + p.commitTimeout
        ) revert InvalidDeadlines();
        // Every horizon is bounded, so no terms can lock a claimant's bond for long: the
        // reveal deadline (after the claim deadline and every commit deadline) is at most
        // MAX_TASK_HORIZON away, settlement at most MAX_CHALLENGE_WINDOW after it.
        if (p.revealDeadline > block.timestamp + MAX_TASK_HORIZON) {
            revert DeadlineTooFar(p.revealDeadline, block.timestamp + MAX_TASK_HORIZON);
        }
        if (p.commitTimeout > MAX_COMMIT_TIMEOUT) {
            revert CommitTimeoutTooLong(p.commitTimeout, MAX_COMMIT_TIMEOUT);
        }
        if (p.challengeWindow > MAX_CHALLENGE_WINDOW) {
            revert ChallengeWindowTooLong(p.challengeWindow, MAX_CHALLENGE_WINDOW);
        }
        uint256 escrow = uint256(p.bountyPerReplica) * p.replicas;
        if (msg.value != escrow) revert WrongValue(msg.value, escrow);

        taskId = _taskId(p);
        TaskState storage t = _tasks[taskId];
        if (t.status != TASK_NONE) revert TaskExists(taskId);
        t.status = TASK_OPEN;
        emit TaskPosted(taskId, msg.sender, p, bundleCid);
    }

    /// @notice Cancel a task nobody has claimed; the bounty is credited back to the requester.
    function cancel(TaskParams calldata p) external {
        (bytes32 id, TaskState storage t) = _open(p);
        if (msg.sender != p.requester) revert NotRequester(msg.sender);
        if (t.everClaimed || t.challenge != CHALLENGE_NONE) revert CancelNotAllowed(id);
        delete _tasks[id];
        uint256 refund = uint256(p.bountyPerReplica) * p.replicas;
        _balances[p.requester] += refund;
        emit TaskCancelled(id, refund);
    }

    // ------------------------------------------------------------------ provider

    /// @notice Claim one replica of a task with a bond, optionally committing at once.
    /// @param commitment `commitmentOf(outputHash, salt, msg.sender)`, or zero to commit later.
    function claim(TaskParams calldata p, bytes32 commitment) external payable {
        (bytes32 id, TaskState storage t) = _open(p);
        _checkClaim(p, id, t);

        uint256 commitBy = block.timestamp + p.commitTimeout;
        TaskState memory s = t;
        s.claimed += 1;
        s.everClaimed = true;
        Replica memory n = Replica(REPLICA_CLAIMED, uint40(commitBy), bytes24(0));
        if (commitment != bytes32(0)) {
            n.state = REPLICA_COMMITTED;
            n.tag = bytes24(commitment);
            s.committed += 1;
        }
        _tasks[id] = s;
        _replicas[id][msg.sender] = n;
        emit ReplicaClaimed(id, msg.sender, commitBy, commitment);
    }

    /// @notice Claim, reveal and settle a one-replica task with no challenge window in one
    /// transaction, sent once the result is ready. With one replica there is nobody to copy
    /// from, so there is no commitment, and its reveal is the whole settlement: the caller is
    /// paid bounty + bond at once. Only for tasks assigned to the caller (`p.assignee`),
    /// whose provider runs the task before touching the chain (`NotAssignedTask` otherwise).
    function claimAndFinalize(TaskParams calldata p, bytes32 outputHash, string calldata resultCid)
        external
        payable
    {
        (bytes32 id, TaskState storage t) = _open(p);
        // Nothing commits the caller's output before it is sent: on an open task anyone who
        // sees it in the mempool could copy it and claim first. Only the assignee may do this.
        if (p.assignee == address(0)) revert NotAssignedTask(id);
        if (p.replicas != 1 || p.challengeWindow != 0) revert NotSingleShot(id);
        _checkClaim(p, id, t);
        if (bytes(resultCid).length == 0) revert EmptyCid();

        delete _tasks[id];
        uint256 payout = uint256(p.bountyPerReplica) + p.bond;
        emit ReplicaClaimed(id, msg.sender, block.timestamp + p.commitTimeout, bytes32(0));
        emit ResultRevealed(id, msg.sender, outputHash, resultCid);
        emit TaskFinalized(id, RESULT_ACCEPTED, outputHash, resultCid, 1, payout, 0);

        address[] memory who = new address[](1);
        uint8[] memory what = new uint8[](1);
        who[0] = msg.sender;
        what[0] = OUTCOME_WON;
        registry.recordOutcomes(who, what);
        emit Withdrawn(msg.sender, payout);
        (bool ok,) = msg.sender.call{value: payout}("");
        if (!ok) revert TransferFailed(msg.sender, payout);
    }

    /// @notice Commit to a result before this claim's commit deadline.
    /// @param commitment `commitmentOf(outputHash, salt, msg.sender)`.
    function commit(TaskParams calldata p, bytes32 commitment) external {
        (bytes32 id, TaskState storage t) = _open(p);
        if (commitment == bytes32(0)) revert ZeroCommitment();
        Replica storage r = _replicas[id][msg.sender];
        Replica memory m = r;
        if (m.state != REPLICA_CLAIMED) revert WrongReplicaState(id, msg.sender, m.state);
        if (block.timestamp > m.commitBy) revert CommitDeadlinePassed(m.commitBy);
        m.state = REPLICA_COMMITTED;
        m.tag = bytes24(commitment);
        _replicas[id][msg.sender] = m;
        t.committed += 1;
        emit ResultCommitted(id, msg.sender, commitment);
    }

    /// @notice Reveal the committed result.
    function reveal(
        TaskParams calldata p,
        bytes32 outputHash,
        string calldata resultCid,
        bytes32 salt
    ) external {
        (bytes32 id, TaskState storage t) = _open(p);
        _reveal(p, id, t, outputHash, resultCid, salt, true);
    }

    /// @notice Reveal, then settle the task in the same transaction (paying the caller's own
    /// share to it, as `finalize` does). Only possible when the settlement time is reached by this reveal, i.e.
    /// it is the last reveal of a task with `challengeWindow == 0`.
    /// @param reveals As for `finalize`, including the caller's own reveal.
    /// @param winningCid As `finalize`'s `resultCid`; "" means the caller's own `resultCid`.
    function revealAndFinalize(
        TaskParams calldata p,
        bytes32 outputHash,
        string calldata resultCid,
        bytes32 salt,
        Reveal[] calldata reveals,
        string calldata winningCid
    ) external {
        (bytes32 id, TaskState storage t) = _open(p);
        // The task and the caller's replica are deleted by the settlement below, so the reveal
        // is kept in memory instead of being written to storage first.
        (TaskState memory s, bytes24 tag) = _reveal(p, id, t, outputHash, resultCid, salt, false);
        Self memory self = Self(msg.sender, tag);
        string calldata cid = bytes(winningCid).length == 0 ? resultCid : winningCid;
        _finalize(p, id, s, reveals, cid, self);
    }

    // ------------------------------------------------------------------ anyone

    /// @notice Settle a task: pay winners, slash losers and no-shows, refund the requester. The
    /// caller's own share is sent to it now; everyone else's is credited for `withdraw()`.
    /// @param reveals Every currently claimed replica, ascending by provider address.
    /// @param resultCid The result CID revealed by one winner; ignored without quorum.
    function finalize(TaskParams calldata p, Reveal[] calldata reveals, string calldata resultCid)
        external
    {
        (bytes32 id, TaskState storage t) = _open(p);
        _finalize(p, id, t, reveals, resultCid, Self(address(0), bytes24(0)));
    }

    /// @notice Free the slot of a replica that missed its commit deadline; its bond is slashed.
    function reopen(TaskParams calldata p, address provider) external {
        (bytes32 id, TaskState storage t) = _open(p);
        Replica storage r = _replicas[id][provider];
        if (r.state != REPLICA_CLAIMED) revert WrongReplicaState(id, provider, r.state);
        if (block.timestamp <= r.commitBy) revert CommitDeadlineNotPassed(r.commitBy);
        r.state = REPLICA_REOPENED; // the same provider may not claim this task again
        t.claimed -= 1;
        _balances[p.requester] += p.bond;
        emit ReplicaReopened(id, provider, p.bond);
        address[] memory who = new address[](1);
        uint8[] memory what = new uint8[](1);
        who[0] = provider;
        what[0] = OUTCOME_SLASHED;
        registry.recordOutcomes(who, what);
    }

    /// @notice Challenge a task's outcome once its reveals closed and before its settlement
    /// time; draws the panel and freezes settlement until `resolveChallenge`.
    /// @param evidenceCid CID of the challenger's evidence, for the panel and anyone else.
    function challenge(TaskParams calldata p, string calldata evidenceCid) external payable {
        (bytes32 id, TaskState storage t) = _open(p);
        if (msg.value != challengeBond) revert WrongValue(msg.value, challengeBond);
        uint256 evidenceLength = bytes(evidenceCid).length;
        if (evidenceLength == 0) revert EmptyCid();
        if (evidenceLength > MAX_EVIDENCE_CID) {
            revert EvidenceCidTooLong(evidenceLength, MAX_EVIDENCE_CID);
        }
        if (t.challenge != CHALLENGE_NONE) revert AlreadyChallenged(id);
        uint256 at = _settleTime(p, t);
        if (p.challengeWindow == 0 || block.timestamp >= at) revert ChallengeClosed(at);
        // The panel judges revealed outputs, and nobody may claim (and so join the task)
        // after this point.
        if (t.revealed < p.replicas && block.timestamp <= p.revealDeadline) {
            revert ChallengeNotOpen(id);
        }
        // A provider of the task could otherwise challenge its own majority to shield its bond.
        if (_replicas[id][msg.sender].state != REPLICA_NONE) revert SelfChallenge(id, msg.sender);
        t.challenge = CHALLENGE_PENDING;
        Challenge storage c = _challenges[id];
        uint256 voteBy = block.timestamp + VOTE_PERIOD;
        uint256 revealBy = voteBy + VOTE_REVEAL_PERIOD;
        c.challenger = msg.sender;
        c.voteBy = uint40(voteBy);
        c.revealBy = uint40(revealBy);
        address[PANEL_SIZE] memory panel = _drawPanel(p, id);
        c.panel = panel;
        emit TaskChallenged(id, msg.sender, msg.value, evidenceCid);
        emit PanelDrawn(id, panel, voteBy, revealBy);
    }

    /// @notice Commit a panelist's vote until `voteBy`.
    /// @param commitment `voteCommitmentOf(upheld, salt, msg.sender)`.
    function commitVote(bytes32 taskId, bytes32 commitment) external {
        Challenge storage c = _pending(taskId);
        uint256 seat = _seat(c, taskId);
        if (block.timestamp > c.voteBy) revert VotingClosed(c.voteBy);
        if (commitment == bytes32(0)) revert ZeroCommitment();
        uint8 state = c.votes[seat];
        if (state != VOTE_NONE) revert WrongVoteState(taskId, msg.sender, state);
        c.commits[seat] = commitment;
        c.votes[seat] = VOTE_COMMITTED;
        emit VoteCommitted(taskId, msg.sender, commitment);
    }

    /// @notice Reveal a committed vote, once every panelist committed or `voteBy` passed (so
    /// no vote can be copied), until `revealBy`.
    function revealVote(bytes32 taskId, bool upheld, bytes32 salt) external {
        Challenge storage c = _pending(taskId);
        uint256 seat = _seat(c, taskId);
        if (block.timestamp > c.revealBy) revert VoteRevealClosed(c.revealBy);
        if (block.timestamp <= c.voteBy) {
            for (uint256 i = 0; i < PANEL_SIZE; ++i) {
                if (c.votes[i] == VOTE_NONE) revert VoteRevealNotOpen(taskId);
            }
        }
        uint8 state = c.votes[seat];
        if (state != VOTE_COMMITTED) revert WrongVoteState(taskId, msg.sender, state);
        if (keccak256(abi.encode(upheld, salt, msg.sender)) != c.commits[seat]) {
            revert VoteMismatch(taskId, msg.sender);
        }
        c.votes[seat] = upheld ? VOTE_UPHOLD : VOTE_REJECT;
        emit VoteRevealed(taskId, msg.sender, upheld);
    }

    /// @notice Decide a pending challenge; anyone, once every panelist revealed or `revealBy`
    /// passed. The majority of revealed votes decides; none or a tie is CHALLENGE_LAPSED.
    /// Panelists that did not reveal are slashed; those with a decided majority are paid.
    function resolveChallenge(TaskParams calldata p) external {
        bytes32 taskId = _taskId(p);
        Challenge storage c = _pending(taskId);
        uint8[PANEL_SIZE] memory votes = c.votes;
        uint256 up = 0;
        uint256 down = 0;
        for (uint256 i = 0; i < PANEL_SIZE; ++i) {
            if (votes[i] == VOTE_UPHOLD) ++up;
            else if (votes[i] == VOTE_REJECT) ++down;
        }
        if (up + down < PANEL_SIZE && block.timestamp <= c.revealBy) {
            revert ResolveTooEarly(c.revealBy);
        }
        uint8 outcome = CHALLENGE_LAPSED;
        if (up > down) outcome = CHALLENGE_UPHELD;
        else if (down > up) outcome = CHALLENGE_REJECTED;
        _tasks[taskId].challenge = outcome;
        // The panel failed, not the challenger: its bond comes back whole. (A decided
        // challenge's money moves at settlement, with the replicas'.)
        if (outcome == CHALLENGE_LAPSED) _balances[c.challenger] += challengeBond;

        address[PANEL_SIZE] memory panel = c.panel;
        address[] memory who = new address[](PANEL_SIZE);
        uint8[] memory what = new uint8[](PANEL_SIZE);
        uint256 noShows = 0;
        for (uint256 i = 0; i < PANEL_SIZE; ++i) {
            who[i] = panel[i];
            if (votes[i] != VOTE_UPHOLD && votes[i] != VOTE_REJECT) {
                what[i] = OUTCOME_SLASHED;
                ++noShows;
            }
        }
        // The no-shows' stake compensates the requester for the delay; credited before the
        // registry sends it here.
        uint256[] memory takes = new uint256[](PANEL_SIZE);
        for (uint256 i = 0; i < PANEL_SIZE; ++i) {
            if (what[i] != OUTCOME_SLASHED) continue;
            takes[i] = _stakeTake(panel[i], challengeBond / PANEL_SIZE);
            _balances[p.requester] += takes[i];
        }
        emit ChallengeResolved(taskId, outcome == CHALLENGE_UPHELD, outcome, up, down);
        if (noShows == 0) return;
        // Interactions with the trusted registry: reputation, then the stake.
        registry.recordOutcomes(who, what);
        _slashStakes(who, takes);
    }

    /// @notice Pay the caller's whole balance.
    function withdraw() external {
        uint256 amount = _balances[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        _balances[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed(msg.sender, amount);
    }

    // ------------------------------------------------------------------ views

    /// @notice The id of a task with terms `p`.
    function taskIdOf(TaskParams calldata p) external view returns (bytes32) {
        return _taskId(p);
    }

    /// @notice The commitment a provider submits for `outputHash` with secret `salt`.
    function commitmentOf(bytes32 outputHash, bytes32 salt, address provider)
        external
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(outputHash, salt, provider));
    }

    /// @notice The mutable state of a task (all zero when unknown, settled or cancelled).
    function taskState(bytes32 taskId) external view returns (TaskState memory) {
        return _tasks[taskId];
    }

    /// @notice One provider's replica of a task.
    function replicaOf(bytes32 taskId, address provider) external view returns (Replica memory) {
        return _replicas[taskId][provider];
    }

    /// @notice The earliest time `finalize` may run (it moves earlier once all replicas reveal).
    function settleTime(TaskParams calldata p) external view returns (uint256) {
        (, TaskState storage t) = _open(p);
        return _settleTime(p, t);
    }

    /// @notice Who challenged a task (zero if nobody).
    function challengerOf(bytes32 taskId) external view returns (address) {
        return _challenges[taskId].challenger;
    }

    /// @notice A task's challenge: challenger, deadlines, panel, commitments and votes.
    function challengeOf(bytes32 taskId) external view returns (Challenge memory) {
        return _challenges[taskId];
    }

    /// @notice The commitment a panelist submits for its vote `upheld` with secret `salt`.
    function voteCommitmentOf(bool upheld, bytes32 salt, address panelist)
        external
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(upheld, salt, panelist));
    }

    /// @notice What `account` can `withdraw()`.
    function balanceOf(address account) external view returns (uint256) {
        return _balances[account];
    }

    // ------------------------------------------------------------------ internals

    /// The id binds the chain and this market, so the same terms name different tasks
    /// elsewhere and a task id (or a signature over one) cannot be replayed across deployments.
    function _taskId(TaskParams calldata p) private view returns (bytes32) {
        return keccak256(abi.encode(block.chainid, address(this), p));
    }

    /// The challenge of an open task whose challenge is pending.
    function _pending(bytes32 id) private view returns (Challenge storage) {
        TaskState storage t = _tasks[id];
        if (t.status != TASK_OPEN) revert UnknownTask(id);
        if (t.challenge != CHALLENGE_PENDING) revert NoPendingChallenge(id);
        return _challenges[id];
    }

    /// The caller's seat on the panel.
    function _seat(Challenge storage c, bytes32 id) private view returns (uint256) {
        for (uint256 i = 0; i < PANEL_SIZE; ++i) {
            if (c.panel[i] == msg.sender) return i;
        }
        revert NotPanelist(id, msg.sender);
    }

    /// Draw PANEL_SIZE distinct active providers, none of them the requester, the challenger
    /// (the caller) or a provider that ever claimed a replica of the task.
    ///
    /// The seed (the previous block's hash, the task id, the challenger) is known before the
    /// challenge is sent: it is not a secret lottery, only one nobody picks outright. A
    /// challenger that controls registered providers can grind by choosing the block it
    /// challenges in (any block of the challenge window) until the draw seats its own; that
    /// is the residual risk, bounded by the stake those providers put up. `prevrandao` is left
    /// out on purpose: it is as predictable to the challenger on a proof-of-stake chain, and
    /// local chains (py-evm) seal it after executing the block, which changes the draw.
    /// Sampling is with replacement over every address ever registered (inactive ones are
    /// skipped), so a small or mostly inactive registry can fail to yield a panel.
    function _drawPanel(TaskParams calldata p, bytes32 id)
        private
        view
        returns (address[PANEL_SIZE] memory panel)
    {
        uint256 n = registry.count();
        // slither-disable-next-line weak-prng
        bytes32 seed = keccak256(abi.encode(blockhash(block.number - 1), id, msg.sender));
        uint256 found = 0;
        for (uint256 k = 0; k < DRAW_TRIES && found < PANEL_SIZE && n != 0; ++k) {
            // slither-disable-next-line weak-prng
            address a = registry.providerAt(uint256(keccak256(abi.encode(seed, k))) % n);
            if (a == p.requester || a == msg.sender) continue;
            if (_replicas[id][a].state != REPLICA_NONE) continue;
            bool taken = false;
            for (uint256 i = 0; i < found; ++i) {
                if (panel[i] == a) taken = true;
            }
            if (taken || !registry.isActive(a)) continue;
            panel[found] = a;
            ++found;
        }
        if (found < PANEL_SIZE) revert PanelUnavailable(id, found, PANEL_SIZE);
    }

    function _open(TaskParams calldata p) private view returns (bytes32 id, TaskState storage t) {
        id = _taskId(p);
        t = _tasks[id];
        if (t.status != TASK_OPEN) revert UnknownTask(id);
    }

    /// Whether the caller may take a replica of the task now (with `p.bond` as the value).
    function _checkClaim(TaskParams calldata p, bytes32 id, TaskState storage t) private view {
        if (msg.value != p.bond) revert WrongValue(msg.value, p.bond);
        if (block.timestamp > p.claimDeadline) revert ClaimClosed(p.claimDeadline);
        if (t.claimed >= p.replicas) revert TaskFull(id);
        if (p.assignee != address(0) && msg.sender != p.assignee) {
            revert NotAssignee(msg.sender, p.assignee);
        }
        if (_replicas[id][msg.sender].state != REPLICA_NONE) revert AlreadyClaimed(id, msg.sender);
        if (!registry.isActive(msg.sender)) revert NotActiveProvider(msg.sender);
    }

    function _settleTime(TaskParams calldata p, TaskState memory t)
        private
        pure
        returns (uint256)
    {
        uint256 closedAt = t.revealed == p.replicas ? t.readyAt : uint256(p.revealDeadline) + 1;
        return closedAt + p.challengeWindow;
    }

    function _reveal(
        TaskParams calldata p,
        bytes32 id,
        TaskState storage t,
        bytes32 outputHash,
        string calldata resultCid,
        bytes32 salt,
        bool store
    ) private returns (TaskState memory s, bytes24 tag) {
        if (bytes(resultCid).length == 0) revert EmptyCid();
        Replica memory m = _replicas[id][msg.sender];
        s = t;
        if (m.state == REPLICA_CLAIMED && s.committed + 1 == p.replicas) {
            // The last replica to commit may reveal instead: every other result is already
            // fixed by its commitment, so there is nothing left to copy, and a commitment
            // would only cost a transaction. It counts as committed (the salt is unused).
            if (block.timestamp > m.commitBy) revert CommitDeadlinePassed(m.commitBy);
            s.committed += 1;
        } else {
            if (m.state != REPLICA_COMMITTED) revert WrongReplicaState(id, msg.sender, m.state);
            // Nobody may reveal while another replica can still commit: it could copy the
            // output.
            if (
                s.committed < p.replicas
                    && block.timestamp <= uint256(p.claimDeadline) + p.commitTimeout
            ) revert RevealNotOpen(id);
            if (block.timestamp > p.revealDeadline) revert RevealClosed(p.revealDeadline);
            if (bytes24(keccak256(abi.encode(outputHash, salt, msg.sender))) != m.tag) {
                revert CommitmentMismatch(id, msg.sender);
            }
        }
        tag = bytes24(keccak256(abi.encode(outputHash, keccak256(bytes(resultCid)))));
        s.revealed += 1;
        if (s.revealed == p.replicas) s.readyAt = uint40(block.timestamp);
        if (store) {
            _replicas[id][msg.sender] = Replica(REPLICA_REVEALED, m.commitBy, tag);
            _tasks[id] = s;
        }
        emit ResultRevealed(id, msg.sender, outputHash, resultCid);
    }

    /// A replica revealed in the current transaction but not written to storage.
    struct Self {
        address account; // zero when there is none
        bytes24 tag;
    }

    /// Working set of one settlement, kept in memory to stay under the stack limit.
    struct Settlement {
        bytes32 winner;
        bool accepted;
        bool upheld;
        bool rejected; // a panel rejected a challenge of the result
        uint256 winners;
        uint256 refund;
        uint256 toCaller;
        uint256 toChallenger; // the overturned majority's bonds
        uint256[] takes; // registry stake taken from each of `who` (upheld challenges)
        string cid;
        address[] who;
        uint8[] what;
    }

    function _finalize(
        TaskParams calldata p,
        bytes32 id,
        TaskState memory t,
        Reveal[] calldata reveals,
        string calldata resultCid,
        Self memory self
    ) private {
        uint8 challengeState = t.challenge;
        if (challengeState == CHALLENGE_PENDING) revert ChallengePending(id);
        {
            uint256 at = _settleTime(p, t);
            if (block.timestamp < at) revert TooEarly(at);
        }
        if (reveals.length != t.claimed) revert BadRevealList(reveals.length);

        uint8[] memory states = _checkReveals(id, reveals, self);
        // A memory struct starts zeroed; every field is set below before it is read.
        // slither-disable-next-line uninitialized-local
        Settlement memory z;
        z.upheld = challengeState == CHALLENGE_UPHELD;
        z.rejected = challengeState == CHALLENGE_REJECTED;
        _tally(p, reveals, states, z);
        z.cid = _winningCid(reveals, states, z, resultCid);

        // Effects: credit everyone, clear the task.
        _credits(p, id, reveals, states, z);
        if (challengeState != CHALLENGE_NONE) {
            _settleChallenge(id, p.bond, challengeState, reveals, states, z);
        }
        delete _tasks[id];
        if (z.refund != 0) _credit(p.requester, z.refund, z);

        _emitFinalized(p, id, z);

        // Interactions: the trusted registry, then the caller's own payout.
        if (z.who.length != 0) registry.recordOutcomes(z.who, z.what);
        if (z.upheld) _slashStakes(z.who, z.takes);
        if (z.toCaller != 0) {
            emit Withdrawn(msg.sender, z.toCaller);
            (bool ok,) = msg.sender.call{value: z.toCaller}("");
            if (!ok) revert TransferFailed(msg.sender, z.toCaller);
        }
    }

    function _emitFinalized(TaskParams calldata p, bytes32 id, Settlement memory z) private {
        uint256 payout = uint256(p.bountyPerReplica) + p.bond;
        uint8 result = RESULT_NO_QUORUM;
        if (z.upheld) result = RESULT_OVERTURNED;
        else if (z.accepted) result = RESULT_ACCEPTED;
        bytes32 output = result == RESULT_ACCEPTED ? z.winner : bytes32(0);
        emit TaskFinalized(id, result, output, z.cid, z.winners, payout, z.refund);
    }

    /// The list must be exactly the claimed replicas, ascending, with the data they revealed.
    function _checkReveals(bytes32 id, Reveal[] calldata reveals, Self memory self)
        private
        view
        returns (uint8[] memory states)
    {
        uint256 n = reveals.length;
        states = new uint8[](n);
        address prev = address(0);
        for (uint256 i = 0; i < n; ++i) {
            Reveal calldata v = reveals[i];
            if (v.provider <= prev) revert BadRevealList(i);
            prev = v.provider;
            Replica memory r = v.provider == self.account
                ? Replica(REPLICA_REVEALED, 0, self.tag)
                : _replicas[id][v.provider];
            uint8 st = r.state;
            if (st == REPLICA_REVEALED) {
                bytes24 tag = bytes24(keccak256(abi.encode(v.outputHash, v.resultCidHash)));
                if (tag != r.tag) revert RevealDataMismatch(v.provider);
            } else if (st != REPLICA_CLAIMED && st != REPLICA_COMMITTED) {
                revert BadRevealList(i);
            }
            states[i] = st;
        }
    }

    /// The accepted result's CID must be one a winner revealed.
    function _winningCid(
        Reveal[] calldata reveals,
        uint8[] memory states,
        Settlement memory z,
        string calldata resultCid
    ) private pure returns (string memory) {
        if (!z.accepted || z.upheld) return "";
        bytes32 cidHash = keccak256(bytes(resultCid));
        for (uint256 i = 0; i < reveals.length; ++i) {
            if (
                states[i] == REPLICA_REVEALED && reveals[i].outputHash == z.winner
                    && reveals[i].resultCidHash == cidHash
            ) return resultCid;
        }
        revert ResultCidMismatch();
    }

    /// Credit winners and honest providers, slash the rest, clear the replicas.
    function _credits(
        TaskParams calldata p,
        bytes32 id,
        Reveal[] calldata reveals,
        uint8[] memory states,
        Settlement memory z
    ) private {
        uint256 bond = p.bond;
        z.refund = uint256(p.bountyPerReplica) * p.replicas;
        z.who = new address[](reveals.length);
        z.what = new uint8[](reveals.length);
        for (uint256 i = 0; i < reveals.length; ++i) {
            address provider = reveals[i].provider;
            z.who[i] = provider;
            bool revealed = states[i] == REPLICA_REVEALED;
            bool inMajority = revealed && z.accepted && reveals[i].outputHash == z.winner;
            if (inMajority && !z.upheld) {
                // A result a panel judged and kept is a passed audit.
                z.what[i] = z.rejected ? OUTCOME_AUDIT_PASSED : OUTCOME_WON;
                z.refund -= p.bountyPerReplica;
                _credit(provider, uint256(p.bountyPerReplica) + bond, z);
            } else if (inMajority) {
                z.what[i] = OUTCOME_AUDIT_FAILED; // the majority was overturned by a challenge
                z.toChallenger += bond;
            } else if (revealed && z.accepted && !z.upheld) {
                z.what[i] = OUTCOME_LOST; // outvoted by the accepted majority
                z.refund += bond;
            } else if (revealed) {
                _credit(provider, bond, z); // no quorum, or the vindicated minority
            } else {
                z.what[i] = OUTCOME_SLASHED; // claimed but never revealed
                z.refund += bond;
            }
            delete _replicas[id][provider];
        }
    }

    /// Find the output hash revealed by the most replicas; accepted when it reaches quorum.
    function _tally(
        TaskParams calldata p,
        Reveal[] calldata reveals,
        uint8[] memory states,
        Settlement memory z
    ) private pure {
        uint256 n = reveals.length;
        uint256 best = 0;
        for (uint256 i = 0; i < n; ++i) {
            if (states[i] != REPLICA_REVEALED) continue;
            bytes32 h = reveals[i].outputHash;
            uint256 votes = 0;
            for (uint256 j = 0; j < n; ++j) {
                if (states[j] == REPLICA_REVEALED && reveals[j].outputHash == h) ++votes;
            }
            if (votes > best) {
                best = votes;
                z.winner = h;
            }
        }
        z.accepted = best >= p.quorum;
        if (z.accepted && !z.upheld) z.winners = best;
    }

    function _settleChallenge(
        bytes32 id,
        uint256 bond,
        uint8 challengeState,
        Reveal[] calldata reveals,
        uint8[] memory states,
        Settlement memory z
    ) private {
        Challenge storage c = _challenges[id];
        address challenger = c.challenger;
        address[PANEL_SIZE] memory panel = c.panel;
        uint8[PANEL_SIZE] memory votes = c.votes;
        delete _challenges[id];
        // A lapsed challenge's bond went back to the challenger when it was resolved.
        if (challengeState == CHALLENGE_LAPSED) return;
        uint8 majority = z.upheld ? VOTE_UPHOLD : VOTE_REJECT;
        uint256 half = challengeBond / 2;
        if (z.upheld) {
            // From the overturned majority's bonds: the panel's fee, then the challenger's
            // reward (each at most half a challenge bond), the rest to the requester, who was
            // harmed. The challenger gets its own bond back whole.
            uint256 pot = z.toChallenger;
            uint256 fee = half < pot ? half : pot;
            uint256 reward = half < pot - fee ? half : pot - fee;
            uint256 paid = _payPanel(panel, votes, majority, fee, z);
            _credit(challenger, challengeBond + reward, z);
            z.refund += pot - paid - reward;
            // Proven cheating costs registry stake too: up to `bond` from each provider of the
            // overturned majority, to the requester (taken from the registry afterwards).
            z.takes = new uint256[](z.who.length);
            for (uint256 i = 0; i < z.who.length; ++i) {
                if (z.what[i] != OUTCOME_AUDIT_FAILED) continue;
                z.takes[i] = _stakeTake(z.who[i], bond);
                z.refund += z.takes[i];
            }
            return;
        }
        // Rejected: the panel's fee from the challenge bond, the rest to the winners.
        uint256 held = challengeBond - _payPanel(panel, votes, majority, half, z);
        if (z.winners == 0) {
            z.refund += held;
        } else {
            // Equal shares; what does not divide evenly goes to the requester.
            uint256 share = held / z.winners;
            // slither-disable-next-line weak-prng
            z.refund += held % z.winners;
            for (uint256 i = 0; i < reveals.length; ++i) {
                if (states[i] == REPLICA_REVEALED && reveals[i].outputHash == z.winner) {
                    _credit(reveals[i].provider, share, z);
                }
            }
        }
    }

    /// Share `fee` equally among the panelists that voted `majority`; returns what was paid.
    function _payPanel(
        address[PANEL_SIZE] memory panel,
        uint8[PANEL_SIZE] memory votes,
        uint8 majority,
        uint256 fee,
        Settlement memory z
    ) private returns (uint256) {
        uint256 seats = 0;
        for (uint256 i = 0; i < PANEL_SIZE; ++i) {
            if (votes[i] == majority) ++seats;
        }
        uint256 share = fee / seats; // a decided outcome has at least one vote
        if (share == 0) return 0;
        for (uint256 i = 0; i < PANEL_SIZE; ++i) {
            if (votes[i] == majority) _credit(panel[i], share, z);
        }
        // slither-disable-next-line weak-prng
        return fee - fee % seats;
    }

    /// What `slashStake(provider, amount)` will take: `min(amount, stake)`.
    function _stakeTake(address provider, uint256 amount) private view returns (uint256) {
        uint256 stake = registry.stakeOf(provider);
        return amount < stake ? amount : stake;
    }

    /// Have the registry take the stakes already credited (it sends them here).
    function _slashStakes(address[] memory who, uint256[] memory takes) private {
        for (uint256 i = 0; i < takes.length; ++i) {
            if (takes[i] == 0) continue;
            uint256 taken = registry.slashStake(who[i], takes[i]);
            if (taken != takes[i]) revert SlashMismatch(who[i], taken, takes[i]);
        }
    }

    /// The caller's own share is sent at the end of its transaction (the caller pulling);
    /// everyone else's is credited for `withdraw()`.
    function _credit(address to, uint256 amount, Settlement memory z) private {
        if (to == msg.sender) z.toCaller += amount;
        else _balances[to] += amount;
    }
}
