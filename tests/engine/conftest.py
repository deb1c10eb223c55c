"""A real HTTP server on 127.0.0.1 for the download tests (never the internet)."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, tuple[str, bytes]] = {}  # path → (behaviour, body)
    release = threading.Event()  # ends the "stalls" behaviour

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        behaviour, body = self.files.get(self.path, ("missing", b""))
        if behaviour == "missing":
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if behaviour == "good":
            self.wfile.write(body)
        elif behaviour == "truncated":  # promise everything, send half, close politely
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif behaviour == "dies":  # half, then the server process "dies": connection reset
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.close()
        elif behaviour == "stalls":  # half, then silence until the test ends
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            _Handler.release.wait(60)
        elif behaviour == "slow":  # trickle, so a cancel arrives mid-transfer
            for start in range(0, len(body), 16384):
                try:
                    self.wfile.write(body[start:start + 16384])
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.02)


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"

    def serve(name: str, behaviour: str, body: bytes = PAYLOAD) -> str:
        _Handler.files[f"/{name}"] = (behaviour, body)
        return f"{base}/{name}"

    yield serve
    _Handler.release.set()
    httpd.shutdown()
    httpd.server_close()
    _Handler.files.clear()
    _Handler.release.clear()
