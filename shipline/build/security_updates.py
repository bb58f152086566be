"""Pending security updates of a Debian base image: what apt would upgrade today, from which suite.

A container of the image (our own fixed script, no spec value in it) runs ``apt-get update`` against the
image's own apt sources — failing if any suite cannot be fetched, as apt otherwise only warns — then
``apt-cache policy`` (which suites it reads) and ``apt-get --simulate upgrade`` (what would change). Nothing
is installed: the report says which packages an OS rebuild (a new ``bookworm-YYYY.MM`` label) would update.
"""

from __future__ import annotations

import contextlib
import re

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound
from pydantic import BaseModel

from shipline.build.rootfs import SECURITY_HINT
from shipline.errors import BuildError

MARK = "--- simulated upgrade ---"
SCRIPT = (
    "apt-get -q -o Acquire::Languages=none update --error-on=any >/dev/null 2>/tmp/apt-update.err"
    " || { cat /tmp/apt-update.err >&2; exit 100; }; "
    f"apt-cache policy && echo '{MARK}' && apt-get -q --simulate upgrade"
)
_INST = re.compile(
    r"^Inst (?P<package>\S+) (?:\[(?P<installed>[^\]]*)\] )?\((?P<candidate>\S+) (?P<origin>.*?) \[[^\]]*\]\)"
)
_SECURITY_SUITE = re.compile(r"\bn=([\w.+-]+-security)\b")


class PendingUpdate(BaseModel):
    """A package apt would upgrade: installed version, candidate, and the archive(s) offering it."""

    package: str
    installed: str
    candidate: str
    origin: str
    """As apt prints it: ``Debian-Security:12/stable-security`` (several separated by commas)."""

    @property
    def security(self) -> bool:
        return "-security" in self.origin or "Debian-Security" in self.origin


class UpdatesReport(BaseModel):
    """What apt in ``image`` would upgrade, and the security suites its sources read."""

    image: str
    security_suites: list[str]
    updates: list[PendingUpdate]

    @property
    def security_updates(self) -> list[PendingUpdate]:
        return [update for update in self.updates if update.security]

    def summary(self) -> str:
        """One sentence for operators: how many security updates are pending, or why none can be."""
        if not self.security_suites:
            return (
                f"{self.image}: its apt sources hold no security suite, so it gets no Debian security "
                "updates; set SHIPLINE_DEBIAN_SECURITY_MIRROR and rebuild the OS layer with a new version "
                "label (e.g. bookworm-2026.12)"
            )
        others = len(self.updates) - len(self.security_updates)
        return (
            f"{self.image}: {len(self.security_updates)} package(s) with pending security updates from "
            f"{', '.join(self.security_suites)}, {others} other pending update(s); a rebuild with a new OS "
            "version label applies them"
        )


def parse_simulated_upgrade(output: str) -> list[PendingUpdate]:
    """The ``Inst`` lines of ``apt-get --simulate upgrade``, one update each."""
    updates = []
    for line in output.splitlines():
        if found := _INST.match(line.strip()):
            updates.append(
                PendingUpdate(
                    package=found["package"],
                    installed=found["installed"] or "",
                    candidate=found["candidate"],
                    origin=found["origin"],
                )
            )
    return updates


def parse_security_suites(policy: str) -> list[str]:
    """The security suites (``n=bookworm-security``) among ``apt-cache policy``'s package files."""
    return sorted(set(_SECURITY_SUITE.findall(policy)))


def pending_updates(client: docker.DockerClient, image: str, *, timeout: float = 900) -> UpdatesReport:
    """Run the report's script in a container of ``image`` (host network) and read its output.

    Raises:
        BuildError: if the image cannot run, apt cannot fetch a suite of its sources (transient), or the
            script does not finish within ``timeout`` seconds.
    """
    try:
        container = client.containers.run(image, ["sh", "-c", SCRIPT], detach=True, network_mode="host")
    except ImageNotFound as exc:
        raise BuildError(f"image {image} is not available on this host", transient=True) from exc
    except (APIError, DockerException) as exc:
        raise BuildError(f"cannot check the pending updates of {image}: {exc}") from exc
    try:
        code = int(container.wait(timeout=timeout).get("StatusCode", 1))
        output = container.logs(stdout=True, stderr=False).decode(errors="replace")
        errors = container.logs(stdout=False, stderr=True).decode(errors="replace")
    except (requests.exceptions.RequestException, APIError, DockerException) as exc:
        raise BuildError(
            f"the pending-updates check of {image} did not finish within {timeout:.0f}s", transient=True
        ) from exc
    finally:
        with contextlib.suppress(APIError, DockerException):
            container.remove(force=True)
    if code != 0 or MARK not in output:
        lines = [line for line in errors.splitlines() if line.startswith("E:")] or errors.splitlines()[-1:]
        raise BuildError(
            f"apt-get update in {image} failed: {(lines or [f'exit {code}'])[0]}",
            hint=SECURITY_HINT,
            transient=True,
        )
    policy, _, simulated = output.partition(MARK)
    return UpdatesReport(
        image=image, security_suites=parse_security_suites(policy), updates=parse_simulated_upgrade(simulated)
    )
