// A small HTTP API for procd's examples (Node, no dependencies).
// Listens on 127.0.0.1:$PORT (default 8082); on SIGINT or SIGTERM it stops
// accepting connections and exits once the open ones are done.
'use strict';
const http = require('node:http');

const port = Number(process.env.PORT || 8082);
const server = http.createServer((req, res) => {
  const body = JSON.stringify({ app: 'api', pid: process.pid, path: req.url });
  res.writeHead(200, { 'Content-Type': 'application/json' });
  res.end(body + '\n');
});

server.listen(port, '127.0.0.1', () => {
  console.log(`api: listening on http://127.0.0.1:${port}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    console.log(`api: got ${signal}, shutting down`);
    server.close(() => process.exit(0));
    // Keep-alive connections would hold close() open; procd's stop timeout
    // is the backstop, but do not wait for it.
    server.closeIdleConnections();
  });
}
