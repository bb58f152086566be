"""Coalescing: a change made while a render is applied is never lost, and bursts stay a few renders."""

import asyncio
import time
from pathlib import Path

from shipline.config import Settings
from shipline.discovery.discover import Discovery
from shipline.discovery.instances import Instance
from tests.waiting import eventually_async


class SlowNginx:
    """An nginx whose check and reload take a while, recording what each apply saw."""

    def __init__(self) -> None:
        self.applied: list[int] = []

    def apply(self, files: dict[str, str]) -> bool:
        time.sleep(0.05)  # the slow check and reload themselves: changes pile up meanwhile
        self.applied.append(sum(text.count("server 127.0.0.1:") for text in files.values()))
        return True


async def test_changes_during_a_render_are_rendered_too(tmp_path: Path) -> None:
    discovery = Discovery(Settings(home=tmp_path), window=0.02)
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
