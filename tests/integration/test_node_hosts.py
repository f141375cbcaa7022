"""Provider nodes on separate network hosts: one Linux network namespace each.

Each node process runs in a namespace of its own, joined to this host by a veth pair, with its own
address (``10.x.y.2``) and nothing else: the host's loopback — where anvil and the IPFS daemon
listen — is out of its reach. It reaches them only through a forwarder on its link's host side
(``10.x.y.1``), as a node on another machine would reach a chain node and an IPFS gateway.
The requester stays on the host. Namespaces, links and forwarders are created here and removed
whatever happens.

Needs root and ``ip`` (iproute2); elsewhere the test is not applicable and says so.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from _fleet import ETHER, Fleet
from _proxy import CuttableProxy

from chefsplan_agents.chain import Chain, Deployment
from chefsplan_agents.identity import Identity
from chefsplan_agents.llm import SCRIPTED_OUTPUT, resolve_model
from chefsplan_agents.market import MarketClient
from chefsplan_agents.market._requester import Requester, Timeouts
from chefsplan_agents.registry import RegistryClient
from chefsplan_agents.storage import KuboStore

pytestmark = pytest.mark.integration

HOSTS = 3
NOT_APPLICABLE = "not applicable:"  # the skip prefix the integration run accepts


def _ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", *args] if netns is None else ["ip", "netns", "exec", netns, "ip", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip()}")


def _namespaces_work() -> str | None:
    """Why network namespaces cannot be used here, or ``None`` if they can."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"cs-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except RuntimeError as err:
        return f"network namespaces are not available ({err})"
    _ip("netns", "del", probe)
    return None


@dataclass
class Host:
    """One namespace with its veth link to this host."""

    netns: str
    host_if: str
    host_addr: str
    node_addr: str
    proxies: list[CuttableProxy] = field(default_factory=list)


def _make_host(index: int, subnet: int, tag: str) -> Host:
    host = Host(
        netns=f"cs-{tag}-{index}",
        host_if=f"csh{tag[-5:]}{index}",
        host_addr=f"10.213.{subnet}.{4 * index + 1}",
        node_addr=f"10.213.{subnet}.{4 * index + 2}",
    )
    peer_if = f"csn{tag[-5:]}{index}"
    _ip("netns", "add", host.netns)
    _ip("link", "add", host.host_if, "type", "veth", "peer", "name", peer_if)
    _ip("link", "set", peer_if, "netns", host.netns)
    _ip("addr", "add", f"{host.host_addr}/30", "dev", host.host_if)
    _ip("link", "set", host.host_if, "up")
    _ip("addr", "add", f"{host.node_addr}/30", "dev", peer_if, netns=host.netns)
    _ip("link", "set", peer_if, "up", netns=host.netns)
    _ip("link", "set", "lo", "up", netns=host.netns)
    return host


def _remove_host(host: Host) -> None:
    for proxy in host.proxies:
        proxy.close()
    # Deleting the namespace deletes the veth end inside it, and with it the pair.
    subprocess.run(["ip", "netns", "del", host.netns], capture_output=True, check=False)
    subprocess.run(["ip", "link", "del", host.host_if], capture_output=True, check=False)


def _net_namespace(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


@pytest.fixture()
def hosts() -> Iterator[list[Host]]:
    why = _namespaces_work()
    if why is not None:
        pytest.skip(f"{NOT_APPLICABLE} {why}")
    tag = f"{os.getpid() % 100000:05d}"
    subnet = random.randrange(1, 250)
    made: list[Host] = []
    try:
        for i in range(HOSTS):
            made.append(_make_host(i, subnet, tag))
        yield made
    finally:
        for host in made:
            _remove_host(host)
        leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        assert f"cs-{tag}-" not in leftover.stdout


def _forward(host: Host, target: str) -> CuttableProxy:
    """A forwarder on the host end of ``host``'s link to ``target`` (``host:port``)."""
    target_host, port = target.rsplit(":", 1)
    proxy = CuttableProxy(target_host, int(port), listen_host=host.host_addr)
    host.proxies.append(proxy)
    return proxy


def test_nodes_on_separate_network_hosts_serve_a_task(
    rpc_url: str,
    ipfs_api: str,
    chain: Chain,
    deployment: Deployment,
    hosts: list[Host],
    fleet: Fleet,  # after `hosts`: its nodes stop before the namespaces go
) -> None:
    parts = ipfs_api.strip("/").split("/")  # ip4/127.0.0.1/tcp/5001[/http]
    ipfs_target = f"{parts[1]}:{parts[3]}"
    rpc_target = rpc_url.removeprefix("http://").rstrip("/")
    resolve_model("tiny")
    chain_links = [_forward(h, rpc_target) for h in hosts]
    ipfs_links = [_forward(h, ipfs_target) for h in hosts]
    nodes = []
    for host, to_chain, to_ipfs in zip(hosts, chain_links, ipfs_links, strict=True):
        nodes += fleet.start(
            1,
            chain_url=to_chain.url,
            ipfs_api=f"/ip4/{host.host_addr}/tcp/{to_ipfs.port}/http",
            model="tiny",
            args=["--threads", "1", "--ctx", "512"],
            prefix=["ip", "netns", "exec", host.netns],
        )

    # Every node is a host of its own: its own network namespace, unlike this process's.
    spaces = {_net_namespace(n.proc.pid) for n in nodes}
    assert len(spaces) == HOSTS and _net_namespace(os.getpid()) not in spaces
    # The host's loopback, where the servers listen, is out of a node's reach.
    blocked = subprocess.run(
        ["ip", "netns", "exec", hosts[0].netns, sys.executable, "-c", _CONNECT, rpc_target],
        capture_output=True,
        text=True,
    )
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr

    registry = RegistryClient(deployment.registry)
    market = MarketClient(deployment.market, from_block=deployment.deployed_at)
    requester_id = Identity.generate()
    chain.transfer(requester_id.address, 10 * ETHER)
    with KuboStore(ipfs_api) as store:
        requester = Requester(requester_id, chain, market, store, registry=registry)
        handle = requester.delegate(
            "Plate the dessert",
            replicas=3,
            quorum=2,
            bounty_per_replica=10**15,
            bond=10**15,
            model=resolve_model("tiny").sha256,
            timeouts=Timeouts(claim_window=120, commit_timeout=120, reveal_window=300),
        )
        receipt = requester.wait_result(handle, timeout=180)
        assert receipt.output == SCRIPTED_OUTPUT
        assert {r.did for r in receipt.replicas} == {n.did for n in nodes}
        assert receipt.settlement.winners == 3
        assert store.has(receipt.result_cid)
    # Each node's chain and IPFS traffic came from its own address, over its own link.
    for host, to_chain, to_ipfs in zip(hosts, chain_links, ipfs_links, strict=True):
        assert to_chain.peers == {host.node_addr}
        assert to_ipfs.peers == {host.node_addr}


# Exit 0 if a TCP connection to argv[1] (host:port) succeeds, 1 if it is refused or unreachable.
_CONNECT = """
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
try:
    socket.create_connection((host, int(port)), timeout=3).close()
except OSError:
    sys.exit(1)
"""


def test_connect_probe_tells_reachable_from_unreachable() -> None:
    # The isolation check above relies on this probe: it must see a listening port as open.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        ok = subprocess.run([sys.executable, "-c", _CONNECT, f"127.0.0.1:{port}"], check=False)
        assert ok.returncode == 0
    closed = subprocess.run([sys.executable, "-c", _CONNECT, f"127.0.0.1:{port}"], check=False)
    assert closed.returncode == 1
