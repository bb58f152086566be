"""`shipline doctor` says which routing nginx can run, and fails only when dynamic is asked for and absent."""

from pathlib import Path

import pytest

from shipline.config import Settings
from shipline.stack import doctor


@pytest.mark.parametrize(
    ("present", "mode", "ok", "says"),
    [
        (True, "auto", True, "dynamic available"),
        (False, "auto", True, "template (reload per change)"),
        (False, "template", True, "template (reload per change)"),
        (False, "dynamic", False, "SHIPLINE_NGINX_MODE=dynamic but nginx's Lua module is missing"),
    ],
)
def test_the_routing_check(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, present: bool, mode: str, ok: bool, says: str
) -> None:
    monkeypatch.setattr(doctor, "lua_available", lambda: present)
    check = doctor._routing(Settings(home=tmp_path, nginx_mode=mode))
    assert (check.name, check.ok) == ("nginx routing", ok)
    assert says in check.detail
    assert ("libnginx-mod-http-lua" in check.detail + check.fix) == (not present)  # how to get dynamic
