"""The app layer and config written reproducibly, from an artifact an app's build left (untrusted)."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shipline.build.app_image import image_config, write_layer
from shipline.errors import BuildError

WHEN = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


def _dist(root: Path, stamp: int, mode: int) -> Path:
    dist = root / "dist"
    (dist / "lib" / "__pycache__").mkdir(parents=True)
    (dist / "lib" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (dist / "lib" / "b.py").write_text("b = 1\n")
    (dist / "lib" / "a.py").write_text("a = 1\n")
    (dist / "run").write_text("#!/bin/sh\n")
    (dist / "run").chmod(mode)
    (dist / "passwd").symlink_to("/etc/passwd")
    for path in [*dist.rglob("*"), dist]:
        os.utime(path, (stamp, stamp), follow_symlinks=False)
    return dist


def _members(layer: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.read_bytes()))) as archive:
        return archive.getmembers()


def test_same_content_same_bytes_whatever_the_times_modes_and_order(tmp_path: Path) -> None:
    one = write_layer(
        _dist(tmp_path / "1", 1_600_000_000, 0o700),
        destination="/app",
        directories=["/app"],
        mtime=WHEN,
        out=tmp_path / "1.tgz",
        log=print,
    )
    two = write_layer(
        _dist(tmp_path / "2", 1_700_000_000, 0o750),
        destination="/app",
        directories=["/app"],
        mtime=WHEN,
        out=tmp_path / "2.tgz",
        log=print,
    )
    assert (tmp_path / "1.tgz").read_bytes() == (tmp_path / "2.tgz").read_bytes()
    assert one == two and one.size == (tmp_path / "1.tgz").stat().st_size
    members = _members(tmp_path / "1.tgz")
    assert [m.name for m in members] == [
        "app",
        "app/lib",
        "app/lib/a.py",
        "app/lib/b.py",
        "app/passwd",
        "app/run",
    ]
    assert {m.mtime for m in members} == {int(WHEN.timestamp())}
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    by_name = {m.name: m for m in members}
    assert by_name["app/run"].mode == 0o755 and by_name["app/lib/a.py"].mode == 0o644
    # A link is stored as a link: the host's /etc/passwd is never read into the image.
    assert by_name["app/passwd"].issym() and by_name["app/passwd"].linkname == "/etc/passwd"


def test_another_commit_time_is_another_layer(tmp_path: Path) -> None:
    dist = _dist(tmp_path, 1_600_000_000, 0o755)
    first = write_layer(dist, destination="/app", directories=[], mtime=WHEN, out=tmp_path / "a", log=print)
    later = WHEN.replace(hour=10)
    second = write_layer(dist, destination="/app", directories=[], mtime=later, out=tmp_path / "b", log=print)
    assert first.digest != second.digest


def test_a_file_lands_under_its_name_with_its_parents(tmp_path: Path) -> None:
    jar = tmp_path / "app.jar"
    jar.write_bytes(b"PK")
    write_layer(jar, destination="/opt/app", directories=["/srv"], mtime=WHEN, out=tmp_path / "l", log=print)
    assert [m.name for m in _members(tmp_path / "l")] == ["opt", "opt/app", "opt/app/app.jar", "srv"]


def test_an_artifact_that_is_a_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dist").symlink_to("/etc")
    with pytest.raises(BuildError, match="is a symbolic link"):
        write_layer(
            tmp_path / "dist", destination="/app", directories=[], mtime=WHEN, out=tmp_path / "l", log=print
        )


def test_whiteout_names_are_refused(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / ".wh.bin").write_text("")
    with pytest.raises(BuildError, match=r"\.wh\."):
        write_layer(dist, destination="/app", directories=[], mtime=WHEN, out=tmp_path / "l", log=print)


def test_special_files_are_left_out_and_said(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    os.mkfifo(dist / "pipe")
    (dist / "ok").write_text("ok")
    said: list[str] = []
    write_layer(dist, destination="/app", directories=[], mtime=WHEN, out=tmp_path / "l", log=said.append)
    assert [m.name for m in _members(tmp_path / "l")] == ["app", "app/ok"]
    assert any("left out app/pipe" in line for line in said)


def test_config_inherits_the_base_and_replaces_what_the_app_sets() -> None:
    base: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2020-01-01T00:00:00Z",
        "container": "abc",
        "docker_version": "20.10",
        "config": {
            "Env": ["PATH=/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": {"shipline.layer": "middleware"},
            "Image": "x",
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:os"]},
        "history": [{"created": "2020-01-01T00:00:00Z", "created_by": "import"}],
    }
    config = image_config(
        base,
        diff_ids=["sha256:app"],
        created=WHEN,
        command=["python3", "-m", "app"],
        workdir="/app",
        labels={"shipline.app": "hello"},
        history="artifact",
    )
    assert config["created"] == "2026-11-02T09:30:00Z"
    assert "container" not in config and "docker_version" not in config
    assert config["config"] == {
        "Env": ["PATH=/bin"],
        "Cmd": ["python3", "-m", "app"],
        "WorkingDir": "/app",
        "Labels": {"shipline.layer": "middleware", "shipline.app": "hello"},
    }
    assert config["rootfs"]["diff_ids"] == ["sha256:os", "sha256:app"]
    assert len(config["history"]) == 2 and base["config"]["Cmd"] == ["/bin/sh"]  # the base is not changed


def test_an_artifact_outside_the_workspace_is_refused(tmp_path: Path) -> None:
    from shipline.build.app_image import build
    from shipline.build.registry import PushedImage, Registry

    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "out").symlink_to(tmp_path)  # a link on the artifact's path that leads out
    (tmp_path / "secret").write_text("x")
    with pytest.raises(BuildError, match="outside the workspace"):
        build(
            Registry(address="127.0.0.1:1"),
            repository="127.0.0.1:1/apps/x",
            tag="t",
            artifact=workspace / "out" / "secret",
            workspace=workspace,
            copy_to="/app",
            workdir="/app",
            command=["x"],
            labels={},
            created=WHEN,
            middleware=PushedImage(repository="127.0.0.1:1/m", tag="1", digest="sha256:0"),
            directory=tmp_path / "image",
            log=print,
        )
