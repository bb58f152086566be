"""A fake SonarQube for tests: ``api/ce/activity`` and ``api/measures/component`` as SonarQube answers them
(for the project ``shop`` only), served on 127.0.0.1, and a scanner script that leaves the report a real
scanner leaves."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

TOKEN = "squ_test_token"


class FakeSonarQube(BaseHTTPRequestHandler):
    """api/ce/activity and api/measures/component, as SonarQube answers them."""

    task_statuses: ClassVar[list[str]] = []
    gate: ClassVar[dict[str, Any]] = {}
    requests: ClassVar[list[str]] = []

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        type(self).requests.append(url.path)
        expected = "Basic " + base64.b64encode(f"{TOKEN}:".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self._reply(401, {"errors": [{"msg": "Authentication required"}]})
        elif query.get("component") != "shop":
            self._reply(404, {"errors": [{"msg": f"Component key '{query.get('component')}' not found"}]})
        elif url.path == "/api/ce/activity":
            status = self.task_statuses.pop(0) if len(self.task_statuses) > 1 else self.task_statuses[0]
            self._reply(
                200, {"tasks": [{"id": "AX-older", "status": "SUCCESS"}, {"id": "AX-task", "status": status}]}
            )
        elif url.path == "/api/measures/component":
            measures = [
                {"metric": "alert_status", "value": self.gate["status"]},
                {"metric": "quality_gate_details", "value": json.dumps(self.gate["details"])},
            ]
            self._reply(200, {"component": {"key": "shop", "measures": measures}})
        else:
            self._reply(404, {"errors": [{"msg": "Unknown url"}]})

    def log_message(self, *args: object) -> None:
        """Keep the test output free of request logs."""


def serve_fake_sonarqube() -> Iterator[str]:
    """Serve ``FakeSonarQube`` on a free loopback port; yield its URL; stop it afterwards."""
    FakeSonarQube.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeSonarQube)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


SCANNER = """
import os, pathlib, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("-D"))
assert os.environ["SONAR_TOKEN"] == "squ_test_token", "token not passed"
work = pathlib.Path(".scannerwork"); work.mkdir(exist_ok=True)
(work / "report-task.txt").write_text(
    f"projectKey={args['sonar.projectKey']}\\nserverUrl={args['sonar.host.url']}\\nceTaskId=AX-task\\n"
    f"dashboardUrl={args['sonar.host.url']}/dashboard?id={args['sonar.projectKey']}\\n")
"""
