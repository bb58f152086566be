"""Linux capabilities are the operator's decision: which ones an app's instances may get, per environment.

Every instance starts with none (``cap_drop: [ALL]``). A spec asks for some in ``service.capabilities``; the
environment's ``shipline-environment`` block lists those it allows in ``allowed_capabilities`` (none by
default). A capability the spec asks for and the block does not allow refuses the release: at the
delivery's spec stage (for each environment it goes to) and again by the release flow (a release run
started by hand). Names are Docker's: upper-case, without the ``CAP_`` prefix (``NET_BIND_SERVICE``);
``CAP_NET_BIND_SERVICE`` or lower case are read as the same name.
"""

from __future__ import annotations

from collections.abc import Sequence

CAPABILITIES = frozenset(
    {
        "AUDIT_CONTROL",
        "AUDIT_READ",
        "AUDIT_WRITE",
        "BLOCK_SUSPEND",
        "BPF",
        "CHECKPOINT_RESTORE",
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "IPC_LOCK",
        "IPC_OWNER",
        "KILL",
        "LEASE",
        "LINUX_IMMUTABLE",
        "MAC_ADMIN",
        "MAC_OVERRIDE",
        "MKNOD",
        "NET_ADMIN",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_RAW",
        "PERFMON",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYSLOG",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_CHROOT",
        "SYS_MODULE",
        "SYS_NICE",
        "SYS_PACCT",
        "SYS_PTRACE",
        "SYS_RAWIO",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "WAKE_ALARM",
    }
)
"""The capabilities of Linux (capabilities(7)), as Docker names them."""

FIELD = "allowed_capabilities"
"""The block field an operator edits to allow one."""


def capability_names(names: Sequence[str]) -> list[str]:
    """``names`` as Docker names capabilities (``cap_net_raw`` → ``NET_RAW``), each once, in order.

    Raises:
        ValueError: naming each one that is not a Linux capability (``ALL`` included: it is not one).
    """
    found: list[str] = []
    unknown = []
    for name in names:
        normal = name.strip().upper().removeprefix("CAP_")
        if normal not in CAPABILITIES:
            unknown.append(name)
        elif normal not in found:
            found.append(normal)
    if unknown:
        raise ValueError(
            f"not a Linux capability: {', '.join(repr(n) for n in unknown)} (names as in capabilities(7), "
            "e.g. NET_BIND_SERVICE; each must be named, ALL is not one)"
        )
    return found


def capability_problems(asked: Sequence[str], allowed: Sequence[str], *, env: str, field: str) -> list[str]:
    """Why each of ``asked`` (normalized names) may not be given in ``env``; empty when all may.

    Each problem names the capability, the environment and the block field to change.
    """
    return [
        f"{field} {name} is not a capability {env} allows: an operator adds it to {FIELD} of the "
        f"shipline-environment block {env!r} (Prefect UI, Blocks)"
        for name in asked
        if name not in allowed
    ]
