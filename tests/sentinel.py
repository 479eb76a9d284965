"""A Redis Sentinel group for the tests: a master, a replica and three sentinels, for real.

``sentinel_group()`` starts two ``redis-server`` data nodes (the second ``--replicaof`` the first)
and three ``redis-server --sentinel`` processes monitoring them as ``mymaster`` (quorum 2,
``down-after-milliseconds`` 3000, ``failover-timeout`` 6000), each on a free 127.0.0.1 port in a
temporary folder, and stops them all at the end. Everything waits by polling with a deadline.

A failover is one of:

- ``fail_over()``, graceful and losing nothing: writes on the master are paused
  (``CLIENT PAUSE WRITE``), the replica is waited for until it has everything, then
  ``SENTINEL FAILOVER`` promotes it (Sentinel's forced failover does not wait for the replica by
  itself). The old master is then made a replica of the new one and its clients are dropped, as
  Sentinel would do a few seconds later (``+convert-to-slave``): the writes it was holding are
  never applied (their clients are gone; with ``drop_clients=False`` they meet a replica and are
  refused, ``READONLY``).
- ``kill_master()``: SIGKILL, as a crash. Sentinel notices after ``down-after-milliseconds`` and
  promotes the replica; what the replica had not received yet is lost (replication is
  asynchronous). The killed node comes back empty as a replica of the new master.

Either way the group ends with one master and one replica in sync, every sentinel agreeing, so
the next failover can follow.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis

from tests.servers import free_port, wait_for_port

MASTER_NAME = "mymaster"
DEADLINE = 60.0  # (a loaded 2-core machine: sentinels converge more slowly)
# Long enough that a loaded machine does not look like a dead master (it did at 1000 in CI:
# the sentinels failed over on their own while a test waited for the group to settle).
DOWN_AFTER_MS = 3000
FAILOVER_TIMEOUT_MS = 6000
# Sentinel's own periods (``SENTINEL DEBUG``, Redis 7), shortened so that the group settles in
# a fraction of a second: INFO to each node every 10 s and hello messages every 2 s by default,
# and a sentinel whose timer stalls (a loaded machine) waits 30 s in TILT mode before acting.
SENTINEL_PERIODS = (
    "INFO-PERIOD",
    "300",
    "PUBLISH-PERIOD",
    "300",
    "TILT-PERIOD",
    "2000",
    "MIN-LINK-RECONNECT-PERIOD",
    "300",
)

T = TypeVar("T")


def wait_until(check: Callable[[], T | None], what: str, deadline: float = DEADLINE) -> T:
    """Call ``check`` until it returns something truthy, and return that; fail at the deadline.

    Errors from a server that is going away or coming back count as "not yet".
    """
    end = time.monotonic() + deadline
    last: Exception | None = None
    while True:
        try:
            value = check()
        except redis.RedisError as exc:
            value, last = None, exc
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline}s waiting for {what} (last: {last})")
        time.sleep(0.05)  # polling servers we started, with a deadline


def _client(port: int) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        decode_responses=True,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
    )


def _redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `bash scripts/install_servers`")
    return binary


@dataclass
class Node:
    """One ``redis-server`` process: a data node, or a sentinel (``redis-server --sentinel``)."""

    port: int
    directory: Path
    sentinel: bool = False
    replica_of: int | None = None  # a data node's master when (re)started
    proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"{'sentinel' if self.sentinel else 'redis'}-{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / f"{self.name}.log"

    def client(self) -> redis.Redis:
        return _client(self.port)

    def _argv(self) -> list[str]:
        binary = _redis_server_binary()
        if self.sentinel:
            return [binary, str(self.directory / f"{self.name}.conf"), "--sentinel"]
        argv = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--dbfilename",
            f"{self.name}.rdb",
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync-delay",
            "0",  # a replica (re)joining is synced at once, not after 5 s
            "--logfile",
            str(self.log),
            "--daemonize",
            "no",
        ]
        if self.replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        return argv

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self._argv(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(self.port, self.proc, self.name, self.log)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class SentinelGroup:
    """Two data nodes and three sentinels (module docstring); ``url()`` names them for clients."""

    directory: Path
    data: list[Node] = field(default_factory=list)
    sentinels: list[Node] = field(default_factory=list)

    # -- addresses ----------------------------------------------------------------------------

    def url(self, db: int = 0, *, master_name: str = MASTER_NAME) -> str:
        """``sentinel://127.0.0.1:<p1>,127.0.0.1:<p2>,127.0.0.1:<p3>/<master_name>/<db>``."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.sentinels)
        return f"sentinel://{hosts}/{master_name}/{db}"

    def node(self, port: int) -> Node:
        return next(node for node in self.data if node.port == port)

    def master(self) -> Node:
        """The data node the sentinels agree is the master (waiting until they agree)."""
        return self.node(self.wait_for_master())

    def reported_masters(self) -> set[int | None]:
        """The master port each sentinel reports (None: it does not answer or know one)."""
        ports: set[int | None] = set()
        for sentinel in self.sentinels:
            try:
                with sentinel.client() as client:
                    reply = client.execute_command(
                        "SENTINEL", "get-master-addr-by-name", MASTER_NAME
                    )
            except redis.RedisError:
                reply = None
            ports.add(int(reply[1]) if reply else None)
        return ports

    # -- waiting ------------------------------------------------------------------------------

    def wait_for_master(self, *, other_than: int | None = None, deadline: float = DEADLINE) -> int:
        """Wait until every sentinel reports one master (not ``other_than``) that says it is one."""

        def agreed() -> int | None:
            ports = self.reported_masters()
            if len(ports) != 1:
                return None
            port = ports.pop()
            if port is None or port == other_than:
                return None
            with _client(port) as client:
                role = client.execute_command("ROLE")
            return port if role[0] == "master" else None

        what = "the sentinels to agree on a master"
        if other_than is not None:
            what += f" other than 127.0.0.1:{other_than}"
        return wait_until(agreed, what, deadline)

    def wait_healthy(self, deadline: float = DEADLINE) -> None:
        """Wait until the sentinels agree on a master, the other data node replicates it and every
        sentinel knows the master, the replica and the two other sentinels (what a failover needs).

        Each look reads the whole group again: if the sentinels fail over on their own while we
        wait (a loaded machine can miss pings for ``down-after-milliseconds``), the wait follows
        the group to its new master instead of waiting for the old one to come back.
        """
        seen: dict[str, str] = {}  # what the last look found short (a timeout says)

        def healthy() -> bool:
            seen.clear()
            ports = self.reported_masters()
            port = ports.pop() if len(ports) == 1 else None
            if port is None:
                seen["sentinels"] = f"report masters {sorted(map(str, ports))}"
                return False
            master = self.node(port)
            replica = next(node for node in self.data if node is not master)
            with master.client() as client:
                role = client.execute_command("ROLE")
            with replica.client() as client:
                info = client.info("replication")
            seen["data"] = (
                f"{master.name} role {role[0]}; {replica.name} role {info.get('role')}, link"
                f" {info.get('master_link_status')} to port {info.get('master_port')}"
            )
            if role[0] != "master" or info.get("role") != "slave":
                return False
            if info.get("master_link_status") != "up" or int(info["master_port"]) != master.port:
                return False
            return all(
                self._knows_everyone(sentinel, master, replica, seen) for sentinel in self.sentinels
            )

        try:
            wait_until(healthy, "the group to be healthy", deadline)
        except AssertionError as exc:
            tails = {
                node.name: node.log.read_text(errors="replace").splitlines()[-8:]
                for node in self.sentinels
                if node.log.exists()
            }
            raise AssertionError(f"{exc}; last seen: {seen}; sentinel logs end: {tails}") from None

    @staticmethod
    def _knows_everyone(sentinel: Node, master: Node, replica: Node, seen: dict[str, str]) -> bool:
        with sentinel.client() as client:
            state = _pairs(client.execute_command("SENTINEL", "MASTER", MASTER_NAME))
            replicas = list(
                map(_pairs, client.execute_command("SENTINEL", "REPLICAS", MASTER_NAME))
            )
        known = [(r["port"], r["flags"], r["master-link-status"]) for r in replicas]
        seen[sentinel.name] = (
            f"master {state['port']} flags {state['flags']}, other sentinels"
            f" {state['num-other-sentinels']}, replicas {known}"
        )
        if int(state["port"]) != master.port or int(state["num-other-sentinels"]) < 2:
            return False
        if "s_down" in state["flags"] or "failover" in state["flags"]:
            return False
        # Sentinel promotes only a replica it is connected to, that it recently heard from and
        # that replicates the master.
        return any(
            int(r["port"]) == replica.port
            and r["flags"] == "slave"
            and r["master-link-status"] == "ok"
            and int(r["master-port"]) == master.port
            for r in replicas
        )

    # -- failovers ----------------------------------------------------------------------------

    def fail_over(
        self, deadline: float = DEADLINE, *, drop_clients: bool = True
    ) -> tuple[Node, Node]:
        """A graceful failover that loses nothing (module docstring); returns (old, new).

        ``drop_clients=False`` leaves the old master's clients connected to it (a replica now),
        as they are until Sentinel reconfigures it.
        """
        self.wait_healthy(deadline)
        old = self.master()
        new = next(node for node in self.data if node is not old)
        with old.client() as client:
            client.execute_command("CLIENT", "PAUSE", int(deadline * 1000), "WRITE")
            try:
                offset = int(client.info("replication")["master_repl_offset"])

                def caught_up() -> bool:
                    with new.client() as replica:
                        info = replica.info("replication")
                    return int(info.get("slave_repl_offset", -1)) >= offset

                wait_until(caught_up, f"{new.name} to catch up with {old.name}", deadline)
                with self.sentinels[0].client() as sentinel:
                    sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
                self.wait_for_master(other_than=old.port, deadline=deadline)
                # What Sentinel does to a demoted master a few seconds later: make it a replica
                # and drop its clients. Its paused writes then meet a replica: READONLY.
                client.execute_command("REPLICAOF", "127.0.0.1", new.port)
                if drop_clients:
                    client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            finally:
                client.execute_command("CLIENT", "UNPAUSE")
        old.replica_of = new.port
        self.wait_healthy(deadline)
        return old, new

    def kill_master(self, deadline: float = DEADLINE) -> tuple[Node, Node]:
        """SIGKILL the master, wait for the sentinels to promote the replica; returns (old, new).

        The killed node is started again, empty, as a replica of the new master.
        """
        self.wait_healthy(deadline)
        old = self.master()
        new = next(node for node in self.data if node is not old)
        old.kill()
        self.wait_for_master(other_than=old.port, deadline=deadline)
        old.replica_of = new.port
        old.start()
        self.wait_healthy(deadline)
        return old, new

    # -- life ---------------------------------------------------------------------------------

    def start(self) -> None:
        first = Node(free_port(), self.directory)
        second = Node(free_port(), self.directory, replica_of=first.port)
        self.data = [first, second]
        for node in self.data:
            node.start()
        for _ in range(3):
            sentinel = Node(free_port(), self.directory, sentinel=True)
            (self.directory / f"{sentinel.name}.conf").write_text(
                f"port {sentinel.port}\n"
                "bind 127.0.0.1\n"
                "daemonize no\n"
                f"logfile {sentinel.log}\n"
                f"dir {self.directory}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {first.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            self.sentinels.append(sentinel)
            sentinel.start()
            with sentinel.client() as client, contextlib.suppress(redis.ResponseError):
                client.execute_command("SENTINEL", "DEBUG", *SENTINEL_PERIODS)  # (Redis 7+)
        self.wait_healthy()

    def stop(self) -> None:
        for node in [*self.sentinels, *self.data]:
            node.stop()

    def logs(self) -> str:
        parts = []
        for node in [*self.data, *self.sentinels]:
            text = node.log.read_text(errors="replace") if node.log.exists() else ""
            parts.append(f"===== {node.name} =====\n" + "\n".join(text.splitlines()[-15:]))
        return "\n".join(parts)


def _pairs(flat: Any) -> dict[str, str]:
    """A Sentinel reply (a flat list of names and values, or already a dict) as a dict."""
    if isinstance(flat, dict):
        return {str(k): str(v) for k, v in flat.items()}
    return {str(k): str(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}


@contextlib.contextmanager
def sentinel_group() -> Iterator[SentinelGroup]:
    """A started group in a temporary folder; every process is stopped at the end."""
    with tempfile.TemporaryDirectory(prefix="pyworkflow-sentinel-") as tmp:
        group = SentinelGroup(Path(tmp))
        try:
            group.start()
            yield group
        finally:
            group.stop()
