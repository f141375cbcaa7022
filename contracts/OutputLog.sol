// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title OutputLog — a cheap, storage-free accountability log
/// @notice Interface summary
///
///  - `logOutput(bytes32 subject, bytes32 outputHash, string resultCid)`: anyone; emits
///    `OutputLogged(address indexed sender, bytes32 indexed subject, bytes32 outputHash,
///    string resultCid)`. `subject` is whatever the caller wants to be found by (a task id, the
///    hash of a conversation, a DID hash); nothing is stored, so the event log is the record.
///  - Errors: `EmptyResultCid()`.
contract OutputLog {
    event OutputLogged(
        address indexed sender, bytes32 indexed subject, bytes32 outputHash, string resultCid
    );

    error EmptyResultCid();

    /// @notice Log that the caller produced `outputHash` (content at `resultCid`) for `subject`.
    function logOutput(bytes32 subject, bytes32 outputHash, string calldata resultCid) external {
        if (bytes(resultCid).length == 0) revert EmptyResultCid();
        emit OutputLogged(msg.sender, subject, outputHash, resultCid);
    }
}
