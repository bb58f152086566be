"""How repositories are compared for ownership of an app name (``shipline.apps.repository_identity``)."""

from pathlib import Path

from shipline.apps import repository_identity, same_repository


def test_urls_compare_without_credentials_case_of_host_trailing_slash_or_dot_git() -> None:
    assert same_repository(
        "https://GitLab.Example.com/team/shop.git", "https://gitlab.example.com/team/shop/"
    )
    assert same_repository(
        "https://oauth2:t0ken@gitlab.example.com/team/shop.git", "https://gitlab.example.com/team/shop"
    )
    assert not same_repository(
        "https://gitlab.example.com/team/shop", "https://gitlab.example.com/other/shop"
    )
    assert not same_repository(
        "https://gitlab.example.com/team/shop", "https://gitlab.example.com:8443/team/shop"
    )
    assert (
        repository_identity("https://gitlab.example.com/Team/Shop.git")
        == "https://gitlab.example.com/Team/Shop"
    )


def test_local_paths_compare_resolved(tmp_path: Path) -> None:
    repo = tmp_path / "shop.git"
    repo.mkdir()
    assert same_repository(str(repo), str(tmp_path / "x" / ".." / "shop.git"))
    assert same_repository(str(repo), f"file://{repo}")
    assert not same_repository(str(repo), str(tmp_path / "other.git"))
