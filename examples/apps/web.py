#!/usr/bin/env python3
"""A small HTTP server for procd's examples (stdlib only).

Listens on 127.0.0.1:$PORT (default 8081) and exits cleanly on SIGINT, the
signal procd sends first by default, and on SIGTERM.
"""
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    # Headers and body are written separately; without this, keep-alive
    # clients wait 40 ms per request on Nagle's algorithm.
    disable_nagle_algorithm = True

    def do_GET(self):
        body = f"hello from web (pid {os.getpid()}, instance {os.environ.get('PROCD_INSTANCE', '?')})\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    port = int(os.environ.get("PORT", "8081"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)

    def stop(signum, _frame):
        print(f"web: got signal {signum}, shutting down", flush=True)
        # shutdown() waits for serve_forever() to return, so call it from
        # another thread than the one serving.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"web: listening on http://127.0.0.1:{port}", flush=True)
    server.serve_forever()
    server.server_close()
    print("web: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
