#!/usr/bin/env python3
"""A Python HTTP server that runs as several instances on one socket held by
procd, and is replaced without dropping a request (stdlib only).

The pattern to follow:

1. Serve the socket procd passes (fd 3, systemd's LISTEN_FDS protocol) when
   LISTEN_PID is this process; else bind PORT yourself. Make it
   NON-BLOCKING: with several processes on one socket, the losers of an
   accept race would otherwise block in accept() and never notice a stop.
2. Say when you are ready: READY=1 to $NOTIFY_SOCKET (`ready "notify"`).
3. On SIGINT/SIGTERM: stop accepting, let in-flight requests finish, close
   keep-alive connections after their current request, exit 0. The socket
   stays open in procd and in the other instances.
"""
import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

INSTANCE = os.environ.get("PROCD_INSTANCE", os.environ.get("NODE_APP_INSTANCE", "?"))
stopping = threading.Event()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    # Headers and body are written separately; without this, keep-alive
    # clients wait 40 ms per request on Nagle's algorithm.
    disable_nagle_algorithm = True
    # An idle keep-alive connection is dropped after this long; it also
    # bounds how long a stop waits for quiet clients.
    timeout = 2

    def do_GET(self):
        body = f"hello from cluster.py (pid {os.getpid()}, instance {INSTANCE})\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if stopping.is_set():
            # Finish this request, then close, saying so: the client
            # reconnects and reaches another instance through the shared
            # socket. Closing without saying so would race a client that
            # is already sending its next request on this connection; a
            # connection left idle is closed by `timeout` below.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    # Wait for in-flight request threads in server_close().
    daemon_threads = False
    block_on_close = True


def passed_socket():
    if int(os.environ.get("LISTEN_FDS", "0")) >= 1 and os.environ.get("LISTEN_PID") == str(os.getpid()):
        sock = socket.socket(fileno=3)
        sock.setblocking(False)
        return sock
    return None


def notify_ready():
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"READY=1", path)


def main():
    sock = passed_socket()
    if sock is not None:
        server = Server(sock.getsockname(), Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = sock
        where = "fd 3"
    else:
        port = int(os.environ.get("PORT", "8091"))
        server = Server(("127.0.0.1", port), Handler)
        where = f"127.0.0.1:{port}"

    def stop(signum, _frame):
        if stopping.is_set():
            return
        stopping.set()
        print(f"cluster.py: got signal {signum}, draining", flush=True)
        # shutdown() waits for serve_forever() to return: another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"cluster.py: instance {INSTANCE} serving on {where}", flush=True)
    notify_ready()
    # A short poll interval: the stop is noticed within 50 ms.
    server.serve_forever(poll_interval=0.05)
    # Joins the request threads (block_on_close); closes our copy of the
    # socket only, the shared one stays open in procd.
    server.server_close()
    print("cluster.py: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
