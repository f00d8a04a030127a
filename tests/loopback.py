"""The one loopback HTTP server of the tests: it plays GitHub's API and storage hosts, package
indexes and Debian mirrors, honest or hostile. Each route is the bytes to send or a function of
the request handler (to redirect, drip, lie about lengths ...); other paths come from `folder`
when one is served, else 404. Every request's path and headers are recorded in `seen`."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Callable
from pathlib import Path

Route = Callable[[http.server.BaseHTTPRequestHandler], None]


def body(data: bytes, content_type: str = "application/octet-stream") -> Route:
    def route(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    return route


def redirect(url: str) -> Route:
    def route(handler):
        handler.send_response(302)
        handler.send_header("Location", url)
        handler.end_headers()
    return route


class Loopback:
    def __init__(self, folder: Path | None = None, host: str = "127.0.0.1"):
        self.routes: dict[str, bytes | Route] = {}
        self.seen: list[tuple[str, dict]] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                outer.seen.append((self.path, dict(self.headers)))
                route = outer.routes.get(self.path)
                if isinstance(route, bytes):
                    body(route)(self)
                elif route is not None:
                    route(self)
                elif folder is not None:
                    super().do_GET()
                else:
                    self.send_error(404)

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(folder or Path.cwd()))
        self.httpd = http.server.ThreadingHTTPServer((host, 0), handler)
        self.url = f"http://{'localhost' if host != '127.0.0.1' else host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
