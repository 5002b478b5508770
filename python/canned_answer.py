"""An HTTP server on 127.0.0.1 with one canned answer: the rare statuses of a gateway (store
down, a proxy in front answering for it) that the real binary cannot be made to give on demand,
and the upstream API behind the gateway's reverse proxy."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List


class CannedAnswer:
    """An HTTP server on 127.0.0.1 that answers every request with one status and body."""

    def __init__(self, status: int, body: Any, headers: Dict[str, str] | None = None) -> None:
        answer = (status, json.dumps(body).encode() if not isinstance(body, bytes) else body)
        extra = headers or {}
        seen: List[Dict[str, str]] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                seen.append({"method": self.command, "path": self.path, **dict(self.headers)})
                self.send_response(answer[0])
                self.send_header("Content-Type", "application/json")
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer[1])))
                self.end_headers()
                self.wfile.write(answer[1])

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return self.url

    def __exit__(self, *args: object) -> None:
        self.server.shutdown()
        self.server.server_close()
