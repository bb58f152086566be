"""Server blocks rendered from instances, applied to the stack's real nginx."""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from shipline.config import Settings
from shipline.discovery.instances import Instance
from shipline.discovery.nginx import NginxConfig, file_name, render_app
from shipline.errors import ConfigError, DiscoveryError
from tests.waiting import eventually


class Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"instance {self.server.server_address[1]}".encode()  # type: ignore[index]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Keep the test output free of request logs."""


@pytest.fixture
def backend() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()


@pytest.fixture
def app(app: str, settings: Settings) -> Iterator[str]:
    """This test's app; its nginx file deleted after the test."""
    yield app
    (settings.nginx_conf_dir / file_name(app, "pre")).unlink(missing_ok=True)


def through_nginx(settings: Settings, app: str, expect: str, timeout: float = 5) -> httpx.Response:
    """The first response whose body holds ``expect``: after a reload, nginx's old workers may still
    answer a while with the old config, so status and body come from one response."""

    def answer() -> httpx.Response | None:
        response = httpx.get(settings.nginx_url, headers={"Host": f"{app}.pre.localhost"})
        return response if expect in response.text else None

    return eventually(answer, timeout=timeout, what=f"nginx answering {expect!r} for {app}")


def test_instances_are_served_then_503_when_none_is_live(settings: Settings, app: str, backend: int) -> None:
    nginx = NginxConfig(settings)
    live = [Instance(app=app, env="pre", ip="127.0.0.1", port=backend)]
    assert nginx.apply({file_name(app, "pre"): render_app(app, "pre", live, settings=settings)})
    assert through_nginx(settings, app, f"instance {backend}").text == f"instance {backend}"
    assert not nginx.apply(
        {file_name(app, "pre"): render_app(app, "pre", live, settings=settings)}
    )  # no reload
    assert nginx.apply({file_name(app, "pre"): render_app(app, "pre", [], settings=settings)})
    gone = through_nginx(settings, app, "no live instance")
    assert (gone.status_code, gone.text) == (503, f"no live instance of {app} in pre\n")


def test_broken_template_keeps_the_last_good_config(
    settings: Settings, app: str, backend: int, tmp_path: Path
) -> None:
    nginx = NginxConfig(settings)
    live = [Instance(app=app, env="pre", ip="127.0.0.1", port=backend)]
    nginx.apply({file_name(app, "pre"): render_app(app, "pre", live, settings=settings)})
    broken = tmp_path / "broken.conf.j2"
    broken.write_text(
        "server { listen {{ listen }}; server_name {{ server_name }}; this_is_not_nginx on; }\n"
    )
    live_file = settings.nginx_conf_dir / file_name(app, "pre")
    before = live_file.read_text()
    # An nginx master still reloading from the apply above reads the conf dir: the rejected file must
    # never be there, not even while nginx -t runs.
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.add(live_file.read_text())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with pytest.raises(DiscoveryError, match=f"this_is_not_nginx.* in {settings.nginx_conf_dir}/"):
            nginx.apply(
                {file_name(app, "pre"): render_app(app, "pre", live, settings=settings, template=broken)}
            )
    finally:
        done.set()
        watcher.join()
    assert seen == {before}
    assert live_file.read_text() == before
    assert through_nginx(settings, app, f"instance {backend}").text == f"instance {backend}"


@pytest.mark.parametrize(("app", "env"), [("x;}", "pre"), ("shop", "pre\n}"), ("shop", "pre.localhost; }")])
def test_names_that_try_to_inject_config_are_rejected(settings: Settings, app: str, env: str) -> None:
    with pytest.raises(ConfigError):
        render_app(app, env, [], settings=settings)


def test_a_rejected_file_harms_only_its_own_app(
    settings: Settings, app: str, backend: int, tmp_path: Path
) -> None:
    other = f"{app}-b"
    nginx = NginxConfig(settings)
    broken = tmp_path / "broken.conf.j2"
    broken.write_text(
        "server { listen {{ listen }}; server_name {{ server_name }}; this_is_not_nginx on; }\n"
    )
    live = [Instance(app=app, env="pre", ip="127.0.0.1", port=backend)]
    try:
        with pytest.raises(DiscoveryError, match=f"nginx rejects {file_name(other, 'pre')}") as caught:
            nginx.apply(
                {
                    file_name(app, "pre"): render_app(app, "pre", live, settings=settings),
                    file_name(other, "pre"): render_app(other, "pre", [], settings=settings, template=broken),
                }
            )
        assert caught.value.reloaded
        assert through_nginx(settings, app, f"instance {backend}").text == f"instance {backend}"
        assert not (settings.nginx_conf_dir / file_name(other, "pre")).exists()
    finally:
        (settings.nginx_conf_dir / file_name(other, "pre")).unlink(missing_ok=True)


def test_an_ipv6_instance_is_written_as_nginx_wants_it(settings: Settings, app: str) -> None:
    nginx = NginxConfig(settings)
    six = [Instance(app=app, env="pre", ip="::1", port=22000)]
    text = render_app(app, "pre", six, settings=settings)
    assert "server [::1]:22000" in text
    assert nginx.apply({file_name(app, "pre"): text})  # nginx -t accepts it
