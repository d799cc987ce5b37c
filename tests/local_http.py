"""A real HTTP file server on localhost for download tests (never the internet): ``with serve_folder(dir) as srv``
gives ``srv.url`` (http://127.0.0.1:<port>) and ``srv.requested`` (the paths asked for, in order)."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Served:
    url: str
    requested: list[str] = field(default_factory=list)


@contextmanager
def serve_folder(folder: Path):
    served = Served("")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            served.requested.append(self.path)
            super().do_GET()

        def log_message(self, *args):  # quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    saved = {k: os.environ.get(k) for k in ("no_proxy", "NO_PROXY")}
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1,localhost"  # a proxy must not intercept it
    try:
        yield served
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.shutdown()
        server.server_close()
        thread.join(5)
