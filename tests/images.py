"""Tiny app images for tests: the host's static busybox serving files with httpd, nothing pulled."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import docker

from shipline.build.registry import Registry
from shipline.config import load_settings

APPLETS = ("sh", "httpd", "sleep", "cat", "echo", "wget", "printf")


def busybox_web_image(
    client: docker.DockerClient,
    repository: str,
    tag: str,
    files: dict[str, str],
    *,
    command: list[str] | None = None,
) -> str:
    """Import an image whose /www holds ``files``; push it; return its digest (sha256:…).

    Files under ``cgi-bin/`` are executable: httpd runs them and sends what they print (a CGI program
    that prints a whole ``HTTP/1.0 500 …`` head chooses its own status).

    Its command (``command``, by default ``serve_command()``) serves /www on 127.0.0.1:$PORT.
    """
    busybox = shutil.which("busybox")
    assert busybox, "busybox is missing: run `make install` (package busybox-static)"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(busybox, arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            archive.addfile(link)
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"www/{name}")
            info.size = len(data)
            if name.startswith("cgi-bin/"):
                info.mode = 0o755  # httpd runs it as a CGI program
            archive.addfile(info, io.BytesIO(data))
    cmd = json.dumps(command or serve_command())
    client.api.import_image_from_data(
        buffer.getvalue(), repository=repository, tag=tag, changes=[f"CMD {cmd}"]
    )
    Registry.of_stack(load_settings()).log_in(client)  # the stack's registry answers its login only
    for event in client.images.push(repository, tag=tag, stream=True, decode=True):
        assert "error" not in event, event
    return str(client.images.get_registry_data(f"{repository}:{tag}").id)


def serve_command() -> list[str]:
    return ["sh", "-c", "exec httpd -f -p 127.0.0.1:$PORT -h /www"]


def run_instance(
    client: docker.DockerClient,
    image: str,
    *,
    app: str,
    env: str,
    port: int,
    command: list[str] | None = None,
    release: int | None = None,
) -> str:
    """Start a host-networked container labelled as an instance of ``app`` in ``env``; return its id.

    With ``release``, it is labelled as an instance of that release, as a release flow starts them: the
    registrator registers it only once the release is cleared for traffic.
    """
    container = client.containers.run(
        image,
        command or serve_command(),
        detach=True,
        network_mode="host",
        environment={"PORT": str(port)},
        labels={
            "shipline.app": app,
            "shipline.env": env,
            "shipline.port": str(port),
            "shipline.health": "/healthz",
            **({"shipline.release": str(release)} if release is not None else {}),
        },
    )
    return str(container.id)


def free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def layer_digests(client: docker.DockerClient, reference: str) -> list[str]:
    """The filesystem layers (diff ids) of a local image, bottom first."""
    return list(client.images.get(reference).attrs["RootFS"]["Layers"])
