"""The main nginx configuration of the local stack, checked by the real `nginx -t`."""

import shutil
import subprocess
from pathlib import Path

import pytest

from shipline.config import Settings
from shipline.stack.components import Nginx


@pytest.fixture
def nginx(tmp_path: Path) -> Nginx:
    return Nginx(Settings(home=tmp_path / "home", nginx_port=18181))


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
