#!/usr/bin/env node
// A Node HTTP server that runs as several instances on one socket held by
// procd, and is replaced without dropping a request. The pattern to follow:
//
// 1. Listen on the socket procd passes (fd 3, systemd's LISTEN_FDS
//    protocol) when it is meant for this process; else bind PORT yourself.
// 2. Say when you are ready: process.send('ready') (the channel exists when
//    procd or PM2 gives one; `ready "notify"` in the spec waits for it).
// 3. On SIGINT/SIGTERM: stop accepting, finish in-flight requests, answer
//    with `Connection: close` from then on, close keep-alive connections
//    left idle, then exit 0. The socket stays open in procd and
//    in the other instances, so no client sees a refused connection.
'use strict';
const http = require('http');
const net = require('net');

const instance = process.env.PROCD_INSTANCE ?? process.env.NODE_APP_INSTANCE ?? '?';
let stopping = false;

const server = http.createServer((req, res) => {
  const body = `hello from cluster.js (pid ${process.pid}, instance ${instance})\n`;
  if (stopping) res.setHeader('Connection', 'close');
  res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
});
// Keep-alive sockets idle longer than this are closed by Node anyway.
server.keepAliveTimeout = 5000;

function passedSocket() {
  const fds = Number(process.env.LISTEN_FDS || 0);
  // LISTEN_PID guards against inheriting a parent's variables.
  return fds >= 1 && Number(process.env.LISTEN_PID) === process.pid ? { fd: 3 } : null;
}

const listenOn = passedSocket() ?? { port: Number(process.env.PORT || 8090), host: '127.0.0.1' };
server.listen(listenOn, () => {
  console.log(`cluster.js: instance ${instance} serving on ${listenOn.fd ? 'fd 3' : listenOn.port}`);
  process.send?.('ready');
});

function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  console.log(`cluster.js: ${signal}, draining`);
  // Stop accepting. net.Server's close, not http.Server's: the latter also
  // drops idle keep-alive connections at once (closeIdleConnections), and
  // on a busy connection "idle" is the instant between a response and the
  // client's next request, which is then lost. Instead every connection
  // gets `Connection: close` on its next response and is closed after it;
  // the client reconnects and reaches another instance. The callback runs
  // once every connection has closed.
  net.Server.prototype.close.call(server, () => {
    console.log('cluster.js: stopped');
    process.exit(0);
  });
  // Connections still idle after a grace period belong to quiet clients:
  // close them as an idle timeout would.
  setTimeout(() => server.closeIdleConnections(), 1000).unref();
}
process.on('SIGINT', () => shutdown('SIGINT'));
process.on('SIGTERM', () => shutdown('SIGTERM'));
