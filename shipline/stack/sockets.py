"""Who listens on a TCP port: the answer behind every "port in use" message."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

_LISTEN = "0A"


@dataclass(frozen=True)
class Listener:
    """A process listening on a port (pid and program are None when /proc does not tell)."""

    port: int
    pid: int | None
    program: str | None

    def describe(self) -> str:
        if self.pid is None:
            return "an unknown program"
        return f"{self.program or 'a program'} (pid {self.pid})"


def _listeners(proc_net: Path) -> list[tuple[int, str]]:
    """(port, socket inode) of every listening TCP socket."""
    return [(port, inode) for _, port, inode in _listening_sockets(proc_net)]


def _listening_sockets(
    proc_net: Path,
) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int, str]]:
    """(address, port, socket inode) of every listening TCP socket."""
    found = []
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc_net / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == _LISTEN:
                address, port = local.rsplit(":", 1)
                found.append((_address(address), int(port, 16), inode))
    return found


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net/tcp{,6} prints it: 32-bit words in the host's (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def _listening_inodes(port: int, proc_net: Path) -> set[str]:
    return {inode for listening, inode in _listeners(proc_net) if listening == port}


def listening_ports(address: str | None = None, *, proc: Path = Path("/proc")) -> set[int]:
    """Every TCP port something listens on, on this host; with ``address``, only those that a socket
    bound to it would clash with (sockets on that address, or on every address)."""
    wanted = ipaddress.ip_address(address) if address is not None else None
    ports = set()
    for bound, port, _ in _listening_sockets(proc / "net"):
        mapped = bound.ipv4_mapped if isinstance(bound, ipaddress.IPv6Address) else None
        if wanted is None or bound.is_unspecified or wanted in (bound, mapped):
            ports.add(port)
    return ports


def _owner(inodes: set[str], proc: Path) -> tuple[int, str] | None:
    targets = {f"socket:[{inode}]" for inode in inodes}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if str(fd.readlink()) in targets:
                    return int(entry.name), (entry / "comm").read_text().strip()
        except OSError:
            continue
    return None


def find_listener(port: int, *, proc: Path = Path("/proc")) -> Listener | None:
    """The process listening on ``port`` on any address, or None if the port is free.

    Args:
        port: TCP port.
        proc: The proc filesystem (a fake tree in tests).
    """
    inodes = _listening_inodes(port, proc / "net")
    if not inodes:
        return None
    owner = _owner(inodes, proc)
    if owner is None:
        return Listener(port, None, None)
    return Listener(port, owner[0], owner[1])


def free_port_run(count: int, *, first: int = 1024, last: int = 65535) -> int | None:
    """The first of ``count`` consecutive loopback ports in ``first``..``last`` free to bind now, or None.

    A 3-member etcd takes client port P + 2i and peer port P + 1 + 2i: six in a row.
    """
    import socket

    for base in range(first, last - count + 2):
        held: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                held.append(socket.socket())
                held[-1].bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for each in held:
                each.close()
    return None
