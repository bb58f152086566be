"""The main nginx configuration of the local stack, checked by the real `nginx -t`."""

import shutil
import subprocess
from pathlib import Path

import pytest

from shipline.config import Settings
from shipline.discovery import routes
from shipline.discovery.routes import lua_available, running_mode
from shipline.errors import ConfigError
from shipline.stack.components import Nginx


@pytest.fixture(params=["dynamic", "template"])
def nginx(tmp_path: Path, request: pytest.FixtureRequest) -> Nginx:
    return Nginx(Settings(home=tmp_path / "home", nginx_port=18181, nginx_mode=request.param))


def test_config_listens_on_loopback_and_includes_the_discovery_dir(nginx: Nginx) -> None:
    text = nginx.render_config()
    assert "listen 127.0.0.1:18181 default_server;" in text
    assert f"include {nginx.settings.nginx_conf_dir}/*.conf;" in text
    assert f"pid {nginx.settings.nginx_dir}/nginx.pid;" in text
    assert "daemon off;" in text


def test_nginx_accepts_the_rendered_config(nginx: Nginx) -> None:
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    assert binary, "nginx is not installed: run `make install`"
    nginx.prepare()
    (nginx.settings.nginx_conf_dir / "probe.conf").write_text(
        "server { listen 127.0.0.1:18181; server_name probe.test.localhost; return 200; }\n"
    )
    check = subprocess.run([*nginx.command(), "-t"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    assert "test is successful" in check.stderr


def test_dynamic_routing_loads_lua_and_serves_the_table_on_a_private_socket(tmp_path: Path) -> None:
    assert lua_available(), "nginx's Lua module is missing: run `make install`"
    nginx = Nginx(Settings(home=tmp_path / "home", nginx_port=18181, nginx_mode="dynamic"))
    nginx.prepare()
    text = nginx.render_config()
    assert text.index("load_module /usr/lib/nginx/modules/ndk_http_module.so;") < text.index(
        "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;"
    )
    assert f"listen unix:{nginx.settings.nginx_admin_socket};" in text
    assert "balancer_by_lua_block" in text and "lua_shared_dict shipline_routes" in text
    assert nginx.settings.nginx_admin_socket.parent.stat().st_mode & 0o777 == 0o700
    assert running_mode(nginx.settings) == "dynamic"


def test_template_routing_has_no_lua(tmp_path: Path) -> None:
    nginx = Nginx(Settings(home=tmp_path / "home", nginx_port=18181, nginx_mode="template"))
    nginx.prepare()
    text = nginx.render_config()
    assert "load_module" not in text and "_by_lua" not in text and "unix:" not in text
    assert running_mode(nginx.settings) == "template"


def test_auto_is_dynamic_only_where_the_module_is(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, nginx_mode="auto")
    monkeypatch.setattr(routes, "lua_available", lambda: False)
    assert routes.routing_mode(settings) == "template"
    with pytest.raises(ConfigError, match="SHIPLINE_NGINX_MODE=dynamic needs nginx's Lua module"):
        routes.routing_mode(Settings(home=tmp_path, nginx_mode="dynamic"))
    monkeypatch.setattr(routes, "lua_available", lambda: True)
    assert routes.routing_mode(settings) == "dynamic"
