import subprocess
from pathlib import Path

import pytest

from shipline.build.sources import resolve_source
from shipline.errors import CheckoutError


def commits(repository: str) -> int:
    done = subprocess.run(
        ["git", "--git-dir", repository, "rev-list", "--count", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def test_directory_is_snapshotted_once_per_content(tmp_path: Path) -> None:
    app = tmp_path / "my-app"
    app.mkdir()
    (app / "shipline.yaml").write_text("app: my-app\n")
    repository = resolve_source(str(app), sources_dir=tmp_path / "sources")
    assert repository == str(tmp_path / "sources" / "my-app.git")
    assert resolve_source(str(app), sources_dir=tmp_path / "sources") == repository
    assert commits(repository) == 1
    (app / "code.py").write_text("x = 1\n")
    resolve_source(str(app), sources_dir=tmp_path / "sources")
    assert commits(repository) == 2
    assert not (app / ".git").exists()


def test_urls_and_repositories_pass_through(tmp_path: Path) -> None:
    assert (
        resolve_source("https://gitlab.example/g/app.git", sources_dir=tmp_path)
        == "https://gitlab.example/g/app.git"
    )
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    assert resolve_source(str(tmp_path / "repo"), sources_dir=tmp_path / "s") == str(tmp_path / "repo")


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckoutError, match="is not a directory or a git URL"):
        resolve_source(str(tmp_path / "nope"), sources_dir=tmp_path)
