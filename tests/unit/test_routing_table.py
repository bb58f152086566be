"""Discover's writes into nginx's routing table (dynamic mode), against a fake of the admin API.

The Lua side itself is exercised on the real nginx in tests/integration/test_dynamic_routing.py.
"""

from pathlib import Path

import httpx
import pytest

from shipline.discovery.routes import RoutingTable, TableSync
from shipline.errors import DiscoveryError


class FakeAdmin:
    """Records each update's lines; answers like shipline_routes.lua (names a line it is told to refuse)."""

    def __init__(self) -> None:
        self.updates: list[list[str]] = []
        self.generation: str | None = None
        self.refuse: set[str] = set()
        self.down = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.method == "GET":
            if self.generation is None:
                return httpx.Response(404)
            return httpx.Response(200, text=f"{self.generation}\n")
        lines = request.content.decode().splitlines()
        self.updates.append(lines)
        answer = []
        for line in lines:
            if line.startswith("generation "):
                self.generation = line.split()[1]
            if any(bad in line for bad in self.refuse):
                answer.append(f"rejected {line}: not ip:port: {line.split()[-1]}")
        return httpx.Response(200, text=f"applied {len(lines) - len(answer)}\n" + "\n".join(answer))


@pytest.fixture
def admin() -> FakeAdmin:
    return FakeAdmin()


@pytest.fixture
def sync(admin: FakeAdmin) -> TableSync:
    return TableSync(RoutingTable(Path("/nonexistent"), transport=httpx.MockTransport(admin)))


async def test_the_first_write_is_full_then_only_changes_are_sent(sync: TableSync, admin: FakeAdmin) -> None:
    assert await sync.write({"shop_pre": ["127.0.0.1:20001"], "cart_pre": []})
    assert admin.updates[-1] == [
        f"generation {sync.generation}",
        "set shop_pre 127.0.0.1:20001",
        "set cart_pre",
        "full",
    ]
    assert await sync.in_sync() is True
    assert not await sync.write({"shop_pre": ["127.0.0.1:20001"], "cart_pre": []})  # nothing changed
    assert len(admin.updates) == 1
    assert await sync.write({"shop_pre": ["127.0.0.1:20001", "127.0.0.1:20002"]})
    assert admin.updates[-1] == ["set shop_pre 127.0.0.1:20001,127.0.0.1:20002", "delete cart_pre"]


async def test_a_restarted_nginx_is_told_apart_by_its_generation(sync: TableSync, admin: FakeAdmin) -> None:
    await sync.write({"shop_pre": ["127.0.0.1:20001"]})
    admin.generation = None  # nginx restarted: its table is new
    assert await sync.in_sync() is False
    admin.down = True
    assert await sync.in_sync() is None  # nginx away: neither


async def test_a_failed_write_makes_the_next_one_full(sync: TableSync, admin: FakeAdmin) -> None:
    await sync.write({"shop_pre": ["127.0.0.1:20001"]})
    admin.down = True
    with pytest.raises(DiscoveryError, match="does not answer") as caught:
        await sync.write({"shop_pre": ["127.0.0.1:20002"]})
    assert caught.value.transient
    admin.down = False
    await sync.write({"shop_pre": ["127.0.0.1:20002"]})
    assert admin.updates[-1][-1] == "full"


async def test_a_refused_upstream_keeps_its_members_and_harms_no_other(
    sync: TableSync, admin: FakeAdmin
) -> None:
    await sync.write({"shop_pre": ["127.0.0.1:20001"], "cart_pre": ["127.0.0.1:20002"]})
    admin.refuse = {"bogus"}
    with pytest.raises(DiscoveryError, match="refused set shop_pre bogus"):
        await sync.write({"shop_pre": ["bogus"], "cart_pre": ["127.0.0.1:20003"]})
    assert sync.written == {"shop_pre": ("127.0.0.1:20001",), "cart_pre": ("127.0.0.1:20003",)}
    admin.refuse = set()
    await sync.write({"shop_pre": ["127.0.0.1:20004"], "cart_pre": ["127.0.0.1:20003"]})
    assert admin.updates[-1] == ["set shop_pre 127.0.0.1:20004"]
