"""Coalescing (template mode, fakes for nginx): a change made while a render is applied is never lost,
and bursts stay a few renders."""

import asyncio
import time
from pathlib import Path

import pytest

from shipline.config import Settings
from shipline.discovery.discover import Discovery
from shipline.discovery.instances import Instance
from tests.waiting import eventually_async


class SlowNginx:
    """An nginx whose check and reload take a while, recording what each apply saw."""

    def __init__(self) -> None:
        self.applied: list[int] = []

    def apply(self, files: dict[str, str], remove: object = ()) -> bool:
        time.sleep(0.05)  # the slow check and reload themselves: changes pile up meanwhile
        self.applied.append(sum(text.count("server 127.0.0.1:") for text in files.values()))
        return True


async def test_changes_during_a_render_are_rendered_too(tmp_path: Path) -> None:
    discovery = Discovery(Settings(home=tmp_path, nginx_mode="template"), window=0.02)
    nginx = SlowNginx()
    discovery.nginx = nginx  # type: ignore[assignment]
    for port in range(1, 201):  # a burst that lasts longer than one render
        key = f"/burst_PRE/127.0.0.1-{port}"
        discovery._event(key, deleted=False)
        discovery._changed()
        if port % 20 == 0:
            await asyncio.sleep(0.01)  # the burst's own pace: the render task runs meanwhile

    async def rendered() -> bool:
        return discovery._pending is None or discovery._pending.done()

    assert await eventually_async(rendered, timeout=10, interval=0.01, what="the last render done")
    assert nginx.applied[-1] == 200  # the last render saw every instance
    assert len(nginx.applied) <= 10  # and 200 changes were a few renders
    assert discovery.instances[f"/burst_PRE/127.0.0.1-{200}"] == Instance(
        app="burst", env="pre", ip="127.0.0.1", port=200
    )


class QuickNginx:
    """An nginx that applies at once, recording when each render happened and what it held."""

    def __init__(self) -> None:
        self.applied: list[tuple[float, int]] = []

    def apply(self, files: dict[str, str], remove: object = ()) -> bool:
        self.applied.append((time.monotonic(), sum(t.count("server 127.0.0.1:") for t in files.values())))
        return True


async def burst(discovery: Discovery, app: str, count: int, seconds: float) -> None:
    """``count`` registrations spread evenly over ``seconds``, as etcd's watch delivers them."""
    for port in range(1, count + 1):
        discovery._event(f"/{app}_PRE/127.0.0.1-{port}", deleted=False)
        discovery._changed()
        await asyncio.sleep(seconds / count)


async def settled(discovery: Discovery) -> bool:
    return discovery._pending is None or discovery._pending.done()


@pytest.mark.parametrize("seconds", [0.2, 0.4, 0.8])
async def test_a_burst_is_two_renders_whatever_its_length(tmp_path: Path, seconds: float) -> None:
    discovery = Discovery(Settings(home=tmp_path, nginx_mode="template"))
    nginx = QuickNginx()
    discovery.nginx = nginx  # type: ignore[assignment]
    await burst(discovery, "burst", 200, seconds)
    assert await eventually_async(
        lambda: settled(discovery), timeout=5, interval=0.01, what="the last render"
    )
    # One render at the burst's first change, one after it ends: a fixed window would render once per window.
    assert len(nginx.applied) == 2
    assert nginx.applied[-1][1] == 200


async def test_a_long_burst_is_still_rendered_every_max_wait(tmp_path: Path) -> None:
    discovery = Discovery(Settings(home=tmp_path, nginx_mode="template"), max_wait=0.5)
    nginx = QuickNginx()
    discovery.nginx = nginx  # type: ignore[assignment]
    await burst(discovery, "long", 300, 1.6)
    assert await eventually_async(
        lambda: settled(discovery), timeout=5, interval=0.01, what="the last render"
    )
    assert 3 <= len(nginx.applied) <= 6  # first change, every half second of the burst, its end
    assert nginx.applied[-1][1] == 300


async def test_a_change_after_a_quiet_spell_renders_at_once(tmp_path: Path) -> None:
    discovery = Discovery(Settings(home=tmp_path, nginx_mode="template"))
    nginx = QuickNginx()
    discovery.nginx = nginx  # type: ignore[assignment]
    for port in (1, 2):
        changed = time.monotonic()
        discovery._event(f"/quiet_PRE/127.0.0.1-{port}", deleted=False)
        discovery._changed()
        assert await eventually_async(
            lambda: settled(discovery), timeout=5, interval=0.005, what="the render"
        )
        assert nginx.applied[-1][0] - changed < discovery.window  # not held for the quiet gap
        await asyncio.sleep(0.1)  # a quiet spell longer than the gap
    assert [held for _, held in nginx.applied] == [1, 2]


def test_metrics_are_prometheus_exposition(tmp_path: Path) -> None:
    discovery = Discovery(Settings(home=tmp_path, nginx_mode="template"))
    discovery.metrics.reloads.inc()
    discovery.metrics.latency.observe(0.03)
    text = discovery.metrics.text()
    assert "shipline_discover_reloads_total 1.0" in text
    assert 'shipline_discover_change_to_applied_seconds_bucket{le="0.05"} 1.0' in text
    assert discovery.metrics.value("shipline_discover_renders_total") == 0.0
    assert (
        Discovery(Settings(home=tmp_path, nginx_mode="template")).metrics.value(
            "shipline_discover_reloads_total"
        )
        == 0.0
    )  # own registry


async def test_a_retired_app_loses_its_file_instead_of_a_503_page(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, nginx_mode="template")
    discovery = Discovery(settings, window=0.01)
    seen: list[tuple[list[str], list[str]]] = []

    class Recording:
        def apply(self, files: dict[str, str], remove: object = ()) -> bool:
            seen.append((sorted(files), sorted(remove)))  # type: ignore[call-overload]
            return True

    discovery.nginx = Recording()  # type: ignore[assignment]
    discovery._event("/shop_PRE/127.0.0.1-20001", deleted=False)
    discovery._event("/cart_PRE/127.0.0.1-20002", deleted=False)
    discovery._changed()
    assert await eventually_async(lambda: _done(discovery), timeout=5, what="the first render")
    assert seen[-1] == (["cart_pre.conf", "shop_pre.conf"], [])
    discovery._event("/shop_PRE/127.0.0.1-20001", deleted=True)
    assert discovery._event("/shipline/retired/shop/pre", deleted=False)
    discovery._changed()
    assert await eventually_async(lambda: _done(discovery), timeout=5, what="the render after retiring")
    assert seen[-1] == (["cart_pre.conf"], ["shop_pre.conf"])
    assert discovery._event("/shipline/retired/shop/pre", deleted=True)  # released again
    assert discovery.retired == set()


async def _done(discovery: Discovery) -> bool:
    return discovery._pending is None or discovery._pending.done()
