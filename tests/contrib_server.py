"""A tiny HTTP backend for the adapter tests, run as its own process: one per endpoint.

``python tests/contrib_server.py NAME HOST PORT [CERT KEY]`` binds HOST:PORT
(PORT 0: any), prints the bound port on one line, then answers every GET
with JSON naming itself, the ``Host`` header and the TLS SNI it received,
so a test tallies endpoints from the responses alone. A separate process,
so a test can kill it like a crashed server and count its own descriptors
without the servers' in them. Standard library only.
"""

from __future__ import annotations

import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # bursts of new connections must not be dropped by the backlog


def main(argv: list[str]) -> None:
    name, host, port = argv[0], argv[1], int(argv[2])
    sni: dict[int, str | None] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = json.dumps(
                {"name": name, "host": self.headers.get("Host"), "sni": sni.get(id(self.request))}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = _Server((host, port), Handler)
    if len(argv) == 5:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(argv[3], argv[4])

        def remember_sni(sock: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            sni[id(sock)] = server_name

        context.sni_callback = remember_sni
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
