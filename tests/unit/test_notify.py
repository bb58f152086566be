"""Notices through Prefect's webhook block, against a local server speaking its API."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import unquote

import pytest
from prefect.blocks.notifications import CustomWebhookNotificationBlock

from shipline.release.notify import Outcome, ReleaseNotice, notify_blocks

SHA = "0123456789abcdef0123456789abcdef01234567"


class Recorder(BaseHTTPRequestHandler):
    """GitLab's v4 endpoints for commit statuses and comments, plus a plain webhook sink."""

    calls: ClassVar[list[tuple[str, dict[str, Any], str]]] = []
    fail_with: ClassVar[int | None] = None

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length).decode()
        body = (
            json.loads(raw)
            if raw and self.headers.get("Content-Type", "").startswith("application/json")
            else {}
        )
        type(self).calls.append((unquote(self.path), body, self.headers.get("PRIVATE-TOKEN", "")))
        code = self.fail_with or 201
        answer = {"message": "403 Forbidden"} if self.fail_with else {"id": len(self.calls), **body}
        data = json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        """Keep the test output free of request logs."""


@pytest.fixture
def server() -> Iterator[str]:
    Recorder.calls, Recorder.fail_with = [], None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def notice(outcome: Outcome = "success", env: str = "prod") -> ReleaseNotice:
    return ReleaseNotice(
        app="shop",
        env=env,
        outcome=outcome,
        digest="sha256:" + "f" * 64,
        sha=SHA,
        release=7,
        run_url="http://127.0.0.1:4200/runs/flow-run/1",
    )


def test_webhook_block_delivers_and_a_dead_channel_is_reported(server: str) -> None:
    alive = CustomWebhookNotificationBlock(
        name="team", url=f"{server}/hook", json_data={"text": "{{subject}}"}, allow_private_urls=True
    )
    dead = CustomWebhookNotificationBlock(
        name="gone",
        url="http://127.0.0.1:9/hook",
        json_data={"text": "x"},
        allow_private_urls=True,
        timeout=2,
    )
    deliveries = notify_blocks([("team", alive), ("gone", dead)], notice())
    assert deliveries[0].error is None
    assert deliveries[1].channel == "gone" and deliveries[1].error
    assert Recorder.calls == [("/hook", {"text": "shop released in prod"}, "")]


@pytest.mark.parametrize(
    ("outcome", "env", "subject"),
    [
        ("success", "pre", "shop ready to test in pre"),
        ("success", "prod", "shop released in prod"),
        ("failed", "pre", "shop failed in pre"),
        ("running", "prod", "shop deploying in prod"),
    ],
)
def test_a_good_pre_release_tells_testers_it_is_ready(outcome: Outcome, env: str, subject: str) -> None:
    told = notice(outcome, env).model_copy(update={"where": f"http://shop.{env}.localhost:8080/"})
    assert told.subject == subject
    assert f"- where: http://shop.{env}.localhost:8080/" in told.body
    assert "sha256:" + "f" * 64 in told.body
