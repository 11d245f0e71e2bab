// Preload (`node --require loopback-only.cjs server.js`) that confines a Node
// server which has no host option to loopback.
//
// @modelcontextprotocol/server-everything's HTTP transports call
// `app.listen(process.env.PORT || 3001)` -- no host, so Node would bind every
// interface (`::`), and there is no flag or env var to change that. This
// preload makes every `listen()` without an explicit host bind 127.0.0.1
// instead, refuses an explicit non-loopback host, and prints the address it
// really got (useful with PORT=0, where the server itself prints port 0):
//
//   loopback-only: listening on http://127.0.0.1:PORT
"use strict";
const net = require("node:net");

const LOOPBACK = "127.0.0.1";
const isLoopback = (h) => h === LOOPBACK || h === "localhost" || h === "::1" || /^127\./.test(h);
const origListen = net.Server.prototype.listen;

net.Server.prototype.listen = function listen(...args) {
  const first = args[0];
  if (first !== null && typeof first === "object" && !Array.isArray(first)) {
    if (first.path === undefined && first.fd === undefined && first.handle === undefined && first._handle === undefined) {
      if (first.host === undefined) args[0] = { ...first, host: LOOPBACK };
      else if (!isLoopback(first.host)) throw new Error(`loopback-only: refusing to listen on ${first.host}`);
    }
  } else if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    if (typeof args[1] === "string") {
      if (!isLoopback(args[1])) throw new Error(`loopback-only: refusing to listen on ${args[1]}`);
    } else {
      args.splice(1, 0, LOOPBACK);
    }
  }
  this.once("listening", () => {
    const a = this.address();
    if (a && typeof a === "object") {
      const host = a.family === "IPv6" ? `[${a.address}]` : a.address;
      process.stdout.write(`loopback-only: listening on http://${host}:${a.port}\n`);
    }
  });
  return origListen.apply(this, args);
};
