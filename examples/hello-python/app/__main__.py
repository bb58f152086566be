"""Serve on $BIND:$PORT (the address and port Shipline gives each instance) until SIGTERM."""

from __future__ import annotations

import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from app.service import respond


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        status, content_type, body = respond(self.path)
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        # One access line per request, flushed at once: the platform collects stdout as it is written.
        sys.stdout.write(f"{self.address_string()} {format % args}\n")
        sys.stdout.flush()


def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    server = ThreadingHTTPServer((os.environ.get("BIND", "127.0.0.1"), port), Handler)
    # Stop cleanly when Docker stops the container. shutdown() waits for serve_forever() to return, so it
    # must run on another thread than the one serving (the handler runs on the main thread).
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"hello-python listening on port {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
