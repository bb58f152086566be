"""The seed's "notify testers": a good PRE release sends its notice — the URL to test and the digest —
through the notification blocks the app names, from the release run itself (so before any PROD release
of that image starts); a failed one says it failed."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from prefect.blocks.notifications import CustomWebhookNotificationBlock

from shipline.config import Settings
from tests.e2e.test_release_flow import deliver, request


class Chat(BaseHTTPRequestHandler):
    """The testers' chat: records each webhook call's JSON."""

    received: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).received.append(json.loads(raw))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Keep the test output free of request logs."""


@pytest.fixture
def testers(app: str) -> Iterator[str]:
    """A webhook notification block named after the app, posting to a local recorder."""
    Chat.received = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Chat)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    name = f"{app}-testers"
    CustomWebhookNotificationBlock(
        name=name,
        url=f"http://127.0.0.1:{httpd.server_address[1]}/hook",
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
        allow_private_urls=True,
    ).save(name, overwrite=True)
    yield f"custom-webhook/{name}"
    httpd.shutdown()
    CustomWebhookNotificationBlock.delete(name)


def test_a_good_pre_release_tells_testers_where_to_test_and_a_bad_one_that_it_failed(
    settings: Settings, app: str, testers: str
) -> None:
    good = request(settings, app, "v1", expect="v1").model_copy(update={"notification_blocks": [testers]})
    run = deliver(good)
    assert run.state is not None and run.state.is_completed(), run.state
    (notice,) = Chat.received
    assert notice["subject"] == f"{app} ready to test in pre"
    assert f"- where: http://{app}.pre.localhost:{settings.nginx_port}/" in notice["body"]
    assert f"- image: `{good.digest}`" in notice["body"]
    assert "(release 1)" in notice["body"]

    bad = request(settings, app, "v2", expect="v3").model_copy(update={"notification_blocks": [testers]})
    assert deliver(bad).state.is_failed()  # type: ignore[union-attr]
    assert [n["subject"] for n in Chat.received] == [f"{app} ready to test in pre", f"{app} failed in pre"]
    assert "auto-test(s) failed" in Chat.received[1]["body"]
