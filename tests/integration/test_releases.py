"""Release history in the real etcd, and `shipline releases`."""

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator

import aetcd
import pytest

from shipline.config import Settings
from shipline.errors import ConfigError, ReleaseError
from shipline.release.history import (
    ReleaseStatus,
    last_good,
    list_releases,
    record_release,
    set_status,
)
from tests.cli import shipline

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
async def app(app: str, etcd: aetcd.Client) -> AsyncIterator[str]:
    """This test's app; its release history deleted after the test."""
    yield app
    await etcd.delete_prefix(f"/shipline/releases/{app}/".encode())


async def test_numbers_are_claimed_once_under_concurrency(etcd: aetcd.Client, app: str) -> None:
    async def one(i: int) -> int:
        release = await record_release(
            etcd, app=app, env="pre", image="r/apps/x", digest=DIGEST, sha=f"{i:040x}"
        )
        return release.number

    numbers = await asyncio.gather(*(one(i) for i in range(8)))
    assert sorted(numbers) == list(range(1, 9))
    assert [r.number for r in await list_releases(etcd, app, "pre")] == list(range(1, 9))
    assert await list_releases(etcd, app, "prod") == []


async def test_last_good_release_skips_failed_ones(etcd: aetcd.Client, app: str) -> None:
    first = await record_release(etcd, app=app, env="prod", image="r/apps/x", digest=DIGEST, sha="a" * 40)
    await set_status(etcd, first, ReleaseStatus.LIVE)
    second = await record_release(etcd, app=app, env="prod", image="r/apps/x", digest=DIGEST, sha="b" * 40)
    failed = await set_status(etcd, second, ReleaseStatus.FAILED)
    assert failed.finished is not None
    good = last_good(await list_releases(etcd, app, "prod"))
    assert good is not None and good.number == 1
    superseded = await set_status(etcd, good, ReleaseStatus.SUPERSEDED)
    assert superseded.finished == good.finished  # when it finished deploying, not when it was replaced
    history = await list_releases(etcd, app, "prod")
    assert [r.status for r in history] == [ReleaseStatus.SUPERSEDED, ReleaseStatus.FAILED]
    assert last_good(history) == superseded
    assert last_good(history, before=1) is None


async def test_bad_input_writes_nothing(etcd: aetcd.Client, app: str) -> None:
    with pytest.raises(ReleaseError, match="not an image digest"):
        await record_release(etcd, app=app, env="pre", image="r/apps/x", digest="latest", sha="a" * 40)
    with pytest.raises(ConfigError, match="invalid environment"):
        await record_release(etcd, app=app, env="pre/../prod", image="r/apps/x", digest=DIGEST, sha="a" * 40)
    assert await list_releases(etcd, app, "pre") == []


async def test_cli_lists_releases_as_json(etcd: aetcd.Client, app: str) -> None:
    release = await record_release(etcd, app=app, env="prod", image="r/apps/x", digest=DIGEST, sha="c" * 40)
    await set_status(etcd, release, ReleaseStatus.LIVE)
    done = shipline("releases", app, "--env", "prod", "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert [(r["number"], r["status"], r["digest"], r["sha"]) for r in listed] == [
        (1, "live", DIGEST, "c" * 40)
    ]


def test_cli_reports_an_unreachable_etcd(settings: Settings) -> None:
    env = {"SHIPLINE_ETCD_PORT": "1", "PATH": "/usr/bin:/bin"}
    done = shipline("releases", "shop", "--env", "prod", env=env, timeout=60)
    assert done.returncode == 1
    assert "error: etcd at http://127.0.0.1:1 does not answer" in done.stderr
    assert "Traceback" not in done.stderr


async def test_cli_stats_from_the_history(etcd: aetcd.Client, app: str) -> None:
    from datetime import UTC, datetime, timedelta

    committed = datetime.now(UTC) - timedelta(minutes=10)
    first = await record_release(
        etcd, app=app, env="prod", image="r/apps/x", digest=DIGEST, sha="d" * 40, committed=committed
    )
    await set_status(etcd, first, ReleaseStatus.LIVE)
    second = await record_release(etcd, app=app, env="prod", image="r/apps/x", digest=DIGEST, sha="e" * 40)
    await set_status(etcd, second, ReleaseStatus.ROLLED_BACK)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shipline",
            "releases",
            app,
            "--env",
            "prod",
            "--stats",
            "--days",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["deployments"] == 1
    assert stats["change_failure_rate"] == 0.5
    assert 600 <= stats["lead_time_seconds"] < 900
