// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

// Outcome codes for `AgentRegistry.recordOutcomes` (shared with the TaskMarket).
uint8 constant OUTCOME_NONE = 0;
uint8 constant OUTCOME_WON = 1;
uint8 constant OUTCOME_LOST = 2;
uint8 constant OUTCOME_SLASHED = 3;
// Won a task whose result a challenge panel kept (a passed audit).
uint8 constant OUTCOME_AUDIT_PASSED = 4;
// In a majority a challenge panel overturned: lost, bond slashed, a failed audit.
uint8 constant OUTCOME_AUDIT_FAILED = 5;

/// @title AgentRegistry — DID-backed registry of local-LLM provider nodes
/// @notice Interface summary
///
///  Constructor: `constructor(uint256 minStake, uint256 unstakeCooldown)`; the deployer is `owner`.
///
///  Provider (any address, one registration per address at a time):
///   - `register(string did, string offerCid, bytes32 offerHash)` payable, `msg.value >= minStake`.
///     The DID is a claim, not proof: several addresses may name the same DID, and nothing
///     here checks who controls it. Readers accept a registration only if the offer at
///     `offerCid` is a credential signed by the DID's key that names this address, this chain
///     and this registry (see contracts/README.md), so naming someone else's DID gains nothing
///     and blocks nobody.
///   - `updateOffer(string offerCid, bytes32 offerHash)`
///   - `addStake()` payable
///   - `requestUnstake()` — the provider becomes inactive at once; stake unlocks after the cooldown
///   - `withdrawStake()` — after `unstakeAvailableAt`, pays the whole stake to the provider and
///     ends the registration: DID and offer are cleared (reputation counters stay with the
///     address), and the address may `register` again
///
///  Roles: `setMarket(address)` (owner, once),
///   `recordOutcomes(address[] providers, uint8[] outcomes)` (market only; outcome codes
///   OUTCOME_WON=1, OUTCOME_LOST=2 (lost and bond slashed), OUTCOME_SLASHED=3 (no-show / reopened),
///   OUTCOME_AUDIT_PASSED=4 (won, and a challenge panel rejected a challenge of the result),
///   OUTCOME_AUDIT_FAILED=5 (lost and slashed: a challenge panel overturned the result),
///   0 = no change). Audits are challenges decided by a panel of staked providers on evidence
///   anyone can check (the challenge's evidence CID, the task bundle and the revealed results):
///   no single key records them. `slashStake(address provider, uint256 amount) returns (uint256)` (market only: takes up
///   to `amount` of stake and sends it to the market; below `minStake` the provider is
///   inactive until `addStake` tops it up).
///
///  Views: `getProvider(address) -> Provider`, `isActive(address) -> bool`,
///   `stakeOf(address) -> uint256`, `count() -> uint256`, `providerAt(uint256) -> address` (every address that ever
///   registered, once), `minStake`, `unstakeCooldown`, `owner`, `market`.
///
///  Events: ProviderRegistered, OfferUpdated, StakeAdded, UnstakeRequested, StakeWithdrawn,
///   ReputationUpdated, StakeSlashed, MarketSet.
///  Errors: see the `error` declarations below (all custom errors, no revert strings).
contract AgentRegistry {
    // ------------------------------------------------------------------ types

    /// @notice One provider. The first slot packs stake and every reputation counter so that the
    /// market's per-task outcome update touches a single storage slot.
    struct Provider {
        uint96 stake;
        uint32 won;
        uint32 lost;
        uint32 slashed;
        uint24 auditsPassed;
        uint24 auditsFailed;
        bool active;
        bool registered;
        uint40 unstakeAvailableAt; // 0 while no unstake was requested
        bool listed; // in `providerAt`'s list (set by the first registration, never cleared)
        bytes32 offerHash;
        string did;
        string offerCid;
    }

    // ------------------------------------------------------------------ events

    event ProviderRegistered(
        address indexed provider,
        bytes32 indexed didHash,
        string did,
        string offerCid,
        bytes32 offerHash,
        uint256 stake
    );
    event OfferUpdated(address indexed provider, string offerCid, bytes32 offerHash);
    event StakeAdded(address indexed provider, uint256 amount, uint256 stake);
    event UnstakeRequested(address indexed provider, uint256 availableAt);
    event StakeWithdrawn(address indexed provider, uint256 amount);
    event ReputationUpdated(
        address indexed provider,
        uint32 won,
        uint32 lost,
        uint32 slashed,
        uint32 auditsPassed,
        uint32 auditsFailed
    );
    event StakeSlashed(address indexed provider, uint256 amount, uint256 stake);
    event MarketSet(address indexed market);

    // ------------------------------------------------------------------ errors

    error NotOwner(address caller);
    error NotMarket(address caller);
    error MarketAlreadySet(address market);
    error ZeroAddress();
    error EmptyDid();
    error EmptyOfferCid();
    error AlreadyRegistered(address provider);
    error StakeTooLow(uint256 stake, uint256 minStake);
    error ZeroAmount();
    error StakeTooLarge(uint256 stake);
    error NotRegistered(address provider);
    error UnstakeAlreadyRequested(address provider);
    error UnstakeNotRequested(address provider);
    error CooldownActive(uint256 availableAt);
    error TransferFailed(address to, uint256 amount);
    error LengthMismatch(uint256 providers, uint256 outcomes);
    error UnknownOutcome(uint8 outcome);

    // ------------------------------------------------------------------ storage

    uint256 public immutable minStake;
    uint256 public immutable unstakeCooldown;
    address public immutable owner;
    address public market;

    mapping(address => Provider) private _providers;
    address[] private _all;

    constructor(uint256 minStake_, uint256 unstakeCooldown_) {
        minStake = minStake_;
        unstakeCooldown = unstakeCooldown_;
        owner = msg.sender;
    }

    // ------------------------------------------------------------------ roles

    /// @notice Bind the task market allowed to update reputation. Owner only, exactly once.
    function setMarket(address market_) external {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        if (market != address(0)) revert MarketAlreadySet(market);
        if (market_ == address(0)) revert ZeroAddress();
        market = market_;
        emit MarketSet(market_);
    }

    // ------------------------------------------------------------------ provider actions

    /// @notice Register the caller as a provider with a DID, a signed offer and a stake.
    /// @param did The provider's DID (not unique: readers check the offer proves control).
    /// @param offerCid CID of the signed offer credential on IPFS.
    /// @param offerHash Hash of the offer bytes, so readers can check what they fetched.
    function register(string calldata did, string calldata offerCid, bytes32 offerHash)
        external
        payable
    {
        if (bytes(did).length == 0) revert EmptyDid();
        if (bytes(offerCid).length == 0) revert EmptyOfferCid();
        Provider storage p = _providers[msg.sender];
        if (p.registered) revert AlreadyRegistered(msg.sender);
        if (msg.value < minStake) revert StakeTooLow(msg.value, minStake);
        if (msg.value > type(uint96).max) revert StakeTooLarge(msg.value);

        p.stake = uint96(msg.value);
        p.active = true;
        p.registered = true;
        p.offerHash = offerHash;
        p.did = did;
        p.offerCid = offerCid;
        if (!p.listed) {
            p.listed = true;
            _all.push(msg.sender);
        }
        emit ProviderRegistered(
            msg.sender, keccak256(bytes(did)), did, offerCid, offerHash, msg.value
        );
    }

    /// @notice Point the caller's registration at a new signed offer.
    function updateOffer(string calldata offerCid, bytes32 offerHash) external {
        if (bytes(offerCid).length == 0) revert EmptyOfferCid();
        Provider storage p = _providers[msg.sender];
        if (!p.registered) revert NotRegistered(msg.sender);
        p.offerHash = offerHash;
        p.offerCid = offerCid;
        emit OfferUpdated(msg.sender, offerCid, offerHash);
    }

    /// @notice Add `msg.value` to the caller's stake.
    function addStake() external payable {
        if (msg.value == 0) revert ZeroAmount();
        Provider storage p = _providers[msg.sender];
        if (!p.registered) revert NotRegistered(msg.sender);
        uint256 stake = uint256(p.stake) + msg.value;
        if (stake > type(uint96).max) revert StakeTooLarge(stake);
        p.stake = uint96(stake);
        // A provider made inactive by a stake slash is active again once it tops up (one that
        // asked to unstake stays inactive).
        if (!p.active && p.unstakeAvailableAt == 0 && stake >= minStake) p.active = true;
        emit StakeAdded(msg.sender, msg.value, stake);
    }

    /// @notice Leave the active set now; the stake can be withdrawn after the cooldown.
    function requestUnstake() external {
        Provider storage p = _providers[msg.sender];
        if (!p.registered) revert NotRegistered(msg.sender);
        if (p.unstakeAvailableAt != 0) revert UnstakeAlreadyRequested(msg.sender);
        uint256 availableAt = block.timestamp + unstakeCooldown;
        p.active = false;
        p.unstakeAvailableAt = uint40(availableAt);
        emit UnstakeRequested(msg.sender, availableAt);
    }

    /// @notice Pay the caller's whole stake back once the cooldown has passed, ending its
    /// registration: the DID and offer are cleared (the reputation counters stay with the
    /// address), and the address may register again.
    function withdrawStake() external {
        Provider storage p = _providers[msg.sender];
        if (!p.registered) revert NotRegistered(msg.sender);
        uint256 availableAt = p.unstakeAvailableAt;
        if (availableAt == 0) revert UnstakeNotRequested(msg.sender);
        if (block.timestamp < availableAt) revert CooldownActive(availableAt);
        uint256 amount = p.stake;
        // Effects before the interaction.
        p.stake = 0;
        p.registered = false;
        p.unstakeAvailableAt = 0;
        p.offerHash = bytes32(0);
        delete p.did;
        delete p.offerCid;
        emit StakeWithdrawn(msg.sender, amount);
        if (amount != 0) {
            (bool ok,) = msg.sender.call{value: amount}("");
            if (!ok) revert TransferFailed(msg.sender, amount);
        }
    }

    // ------------------------------------------------------------------ reputation

    /// @notice Record the outcome of one task for each provider. Market only.
    /// @param providers Providers whose counters change.
    /// @param outcomes One OUTCOME_* code per provider.
    function recordOutcomes(address[] calldata providers, uint8[] calldata outcomes) external {
        if (msg.sender != market) revert NotMarket(msg.sender);
        if (providers.length != outcomes.length) {
            revert LengthMismatch(providers.length, outcomes.length);
        }
        for (uint256 i = 0; i < providers.length; ++i) {
            uint8 outcome = outcomes[i];
            if (outcome == OUTCOME_NONE) continue;
            Provider storage p = _providers[providers[i]];
            if (outcome == OUTCOME_WON) {
                p.won = _inc32(p.won);
            } else if (outcome == OUTCOME_LOST) {
                p.lost = _inc32(p.lost);
                p.slashed = _inc32(p.slashed);
            } else if (outcome == OUTCOME_SLASHED) {
                p.slashed = _inc32(p.slashed);
            } else if (outcome == OUTCOME_AUDIT_PASSED) {
                p.won = _inc32(p.won);
                if (p.auditsPassed != type(uint24).max) p.auditsPassed += 1;
            } else if (outcome == OUTCOME_AUDIT_FAILED) {
                p.lost = _inc32(p.lost);
                p.slashed = _inc32(p.slashed);
                if (p.auditsFailed != type(uint24).max) p.auditsFailed += 1;
            } else {
                revert UnknownOutcome(outcome);
            }
            _emitReputation(providers[i], p);
        }
    }

    /// @notice Take up to `amount` of `provider`'s stake (proven cheating) and send it to the
    /// market, which credits it to the party harmed. Market only. A stake left below
    /// `minStake` makes the provider inactive until it tops up with `addStake`.
    /// @return slashed What was taken: `min(amount, stake)`.
    function slashStake(address provider, uint256 amount) external returns (uint256 slashed) {
        address m = market;
        if (msg.sender != m || m == address(0)) revert NotMarket(msg.sender);
        Provider storage p = _providers[provider];
        uint256 stake = p.stake;
        slashed = amount < stake ? amount : stake;
        if (slashed == 0) return 0;
        stake -= slashed;
        p.stake = uint96(stake);
        if (stake < minStake) p.active = false;
        emit StakeSlashed(provider, slashed, stake);
        (bool ok,) = m.call{value: slashed}("");
        if (!ok) revert TransferFailed(m, slashed);
    }

    // ------------------------------------------------------------------ views

    /// @notice The full record of `provider` (all zero / empty if not registered).
    function getProvider(address provider) external view returns (Provider memory) {
        return _providers[provider];
    }

    /// @notice `provider`'s stake in wei.
    function stakeOf(address provider) external view returns (uint256) {
        return _providers[provider].stake;
    }

    /// @notice Whether `provider` may claim tasks: registered, staked, not unstaking.
    function isActive(address provider) external view returns (bool) {
        return _providers[provider].active;
    }

    /// @notice Number of addresses ever registered (each counted once).
    function count() external view returns (uint256) {
        return _all.length;
    }

    /// @notice The `index`-th registered address (registration order).
    function providerAt(uint256 index) external view returns (address) {
        return _all[index];
    }

    // ------------------------------------------------------------------ internals

    /// Saturating increment: a full counter must never make a settlement revert.
    function _inc32(uint32 x) private pure returns (uint32) {
        return x == type(uint32).max ? x : x + 1;
    }

    function _emitReputation(address provider, Provider storage p) private {
        emit ReputationUpdated(provider, p.won, p.lost, p.slashed, p.auditsPassed, p.auditsFailed);
    }
}
