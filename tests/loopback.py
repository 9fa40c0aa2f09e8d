"""A loopback HTTP server for tests of HTTP clients (OpenAI-compatible endpoints)."""

from __future__ import annotations


class LoopbackServer:
    """An HTTP server on 127.0.0.1 (a free port) whose POST replies come from ``reply(handler, body)``,
    which returns ``(status, headers, body)``: bytes, or a function that writes the body to the
    socket itself (no Content-Length; the connection closes after it: trickled or endless bodies).
    Use as a context manager; ``url`` ends in /v1."""

    def __init__(self, reply):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, headers, raw = reply(self, body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in headers.items():
                    self.send_header(k, v)
                if callable(raw):
                    self.end_headers()
                    try:
                        raw(self.wfile)
                    except OSError:  # the client hung up
                        pass
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
