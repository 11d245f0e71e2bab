// Shared harness for the Node interop tests: real processes on loopback.
//
// Every process is started on a free port chosen by the OS (`127.0.0.1:0`,
// PORT=0), its URL is parsed from the line it prints on stdout (polled from a
// file, bounded by STARTUP_TIMEOUT_MS), and it is stopped at teardown (SIGTERM,
// then SIGKILL) -- also when the test failed, and on process exit.
//
// Env: TETHER_BIN (default <repo>/target/debug/tether).

import { spawn, execFile } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, openSync, closeSync, existsSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import assert from "node:assert/strict";

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(here, "..", "..", "..");
export const TETHER_BIN = process.env.TETHER_BIN || join(REPO, "target", "debug", "tether");
export const LOOPBACK_PRELOAD = join(here, "loopback-only.cjs");
const require = createRequire(import.meta.url);

export const STARTUP_TIMEOUT_MS = 15_000;
export const STOP_TIMEOUT_MS = 5_000;
export const REQUEST_TIMEOUT_MS = 15_000;
export const MODERN_VERSION = "2026-07-28";

const live = new Set();
function killLive() {
  for (const p of live) {
    try {
      process.kill(-p.pid, "SIGKILL");
    } catch {}
  }
  live.clear();
}
process.on("exit", killLive);
for (const sig of ["SIGTERM", "SIGINT", "SIGHUP", "SIGPIPE"]) {
  process.once(sig, () => {
    killLive();
    process.exit(128 + (sig === "SIGHUP" ? 1 : sig === "SIGINT" ? 2 : sig === "SIGPIPE" ? 13 : 15));
  });
}

/** "<peer> <op>: expected <expected>, got <got>" -- every failure message has this shape. */
export function msg(peer, op, expected, got) {
  let shown;
  try {
    shown = typeof got === "string" ? JSON.stringify(got) : JSON.stringify(got, null, 0);
  } catch {
    shown = String(got);
  }
  if (shown && shown.length > 3000) shown = shown.slice(0, 3000) + "…";
  return `${peer} ${op}: expected ${expected}, got ${shown}`;
}

/** Describes an error (SDK errors carry code/data) for failure messages. */
export function errInfo(e) {
  if (!e || typeof e !== "object") return String(e);
  const out = { name: e.name, message: e.message };
  if (e.code !== undefined) out.code = e.code;
  if (e.data !== undefined) out.data = e.data;
  if (e.cause) out.cause = String(e.cause?.message ?? e.cause);
  return out;
}

/** Runs `fn`; if it throws, rethrows with the peer/operation prefix and what came back. */
export async function op(peer, operation, fn) {
  try {
    return await fn();
  } catch (e) {
    if (e && e.code === "ERR_ASSERTION") throw e;
    const err = new Error(msg(peer, operation, "a result", { error: errInfo(e) }));
    err.cause = e;
    throw err;
  }
}

export function textOf(result) {
  return (result?.content ?? []).find((c) => c.type === "text")?.text;
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** A timer that does not keep the process alive (for bounded waits raced against events). */
function unrefSleep(ms) {
  return new Promise((r) => setTimeout(r, ms).unref());
}

/** One test's processes: start them, stop them all at teardown. */
export class Launcher {
  constructor(label = "interop") {
    this.dir = mkdtempSync(join(tmpdir(), `tether-${label}-`));
    this.procs = [];
  }

  async spawn(name, argv, lineRe, { env = {}, cwd } = {}) {
    const out = join(this.dir, `${name}.stdout`);
    const err = join(this.dir, `${name}.stderr`);
    const fo = openSync(out, "w");
    const fe = openSync(err, "w");
    const childEnv = { TETHER_LOG: "warn", ...process.env, ...env };
    // TETHER_* variables are tether's own config overlay and it rejects unknown keys.
    delete childEnv.TETHER_BIN;
    delete childEnv.TETHER_CONFIG;
    const child = spawn(argv[0], argv.slice(1), {
      cwd: cwd ?? this.dir,
      env: childEnv,
      stdio: ["ignore", fo, fe],
      detached: true, // own process group: teardown reaches its children too
    });
    closeSync(fo);
    closeSync(fe);
    let exited = null;
    child.on("exit", (code, sig) => (exited = { code, sig }));
    const proc = { name, argv, child, pid: child.pid, stdout: out, stderr: err };
    live.add(proc);
    this.procs.push(proc);
    const deadline = Date.now() + STARTUP_TIMEOUT_MS;
    while (Date.now() < deadline) {
      const m = lineRe.exec(readFileSync(out, "utf8"));
      if (m) {
        proc.url = m[1];
        return proc;
      }
      if (exited) break;
      await sleep(20);
    }
    await this.stop(proc);
    throw new Error(
      `${name}: \`${argv.join(" ")}\` did not print its listening URL within ${STARTUP_TIMEOUT_MS} ms ` +
        `(exit ${JSON.stringify(exited)}); stdout: ${JSON.stringify(readFileSync(out, "utf8").slice(-2000))}; ` +
        `stderr: ${JSON.stringify(readFileSync(err, "utf8").slice(-2000))}`,
    );
  }

  /** `tether demo-upstream --era <era>`; returns { url, base, stats() }. */
  async upstream(era) {
    const p = await this.spawn(
      `upstream-${era}-${this.procs.length}`,
      [TETHER_BIN, "demo-upstream", "--listen", "127.0.0.1:0", "--era", era],
      /demo upstream listening on (http:\/\/127\.0\.0\.1:\d+\/mcp)/,
    );
    p.base = p.url.replace(/\/mcp$/, "");
    p.stats = async () => (await fetch(p.base + "/stats", { signal: AbortSignal.timeout(5000) })).json();
    return p;
  }

  /** `tether serve` federating upstreams: { name: url | { url, era, shared, ... } }. */
  async gateway(upstreams) {
    const name = `tether-${this.procs.length}`;
    const config = join(this.dir, `${name}.toml`);
    const toml = Object.entries(upstreams)
      .map(([n, spec]) => {
        const s = typeof spec === "string" ? { url: spec } : spec;
        return `[[upstreams]]\nname = ${JSON.stringify(n)}\n` +
          Object.entries(s).map(([k, v]) => `${k} = ${JSON.stringify(v)}\n`).join("");
      })
      .join("\n");
    writeFileSync(config, toml);
    const p = await this.spawn(
      name,
      [TETHER_BIN, "serve", "--config", config, "--listen", "127.0.0.1:0"],
      /tether listening on (http:\/\/127\.0\.0\.1:\d+\/mcp)/,
    );
    p.base = p.url.replace(/\/mcp$/, "");
    p.single = (upstream) => `${p.base}/u/${upstream}/mcp`;
    return p;
  }

  /** @modelcontextprotocol/server-everything over Streamable HTTP, bound to 127.0.0.1 only. */
  async everything() {
    const entry = require.resolve("@modelcontextprotocol/server-everything/dist/index.js", { paths: [here] });
    const p = await this.spawn(
      `everything-${this.procs.length}`,
      [process.execPath, "--require", LOOPBACK_PRELOAD, entry, "streamableHttp"],
      /loopback-only: listening on (http:\/\/127\.0\.0\.1:\d+)/,
      { env: { PORT: "0" } },
    );
    p.base = p.url;
    p.url = p.base + "/mcp";
    return p;
  }

  stderrTails(n = 2000) {
    return this.procs
      .map((p) => {
        let t = "";
        try {
          t = readFileSync(p.stderr, "utf8").slice(-n);
        } catch {}
        return t ? `--- stderr of ${p.name}\n${t}` : "";
      })
      .filter(Boolean)
      .join("\n");
  }

  async stop(proc) {
    live.delete(proc);
    if (proc.child.exitCode !== null || proc.child.signalCode !== null) return;
    const gone = new Promise((r) => proc.child.once("exit", r));
    try {
      process.kill(-proc.pid, "SIGTERM");
    } catch {
      return;
    }
    const t = await Promise.race([gone.then(() => "exited"), unrefSleep(STOP_TIMEOUT_MS).then(() => "timeout")]);
    if (t === "timeout") {
      try {
        process.kill(-proc.pid, "SIGKILL");
      } catch {}
      await Promise.race([gone, unrefSleep(STOP_TIMEOUT_MS)]);
    }
  }

  async stopAll({ keepDir = false } = {}) {
    for (const p of [...this.procs].reverse()) await this.stop(p);
    if (!keepDir) rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A fetch that records every request and response (for wire assertions).
 * wire.requests: [{ method, path, headers, body }], wire.responses: [{ method, status, headers }].
 */
export function recordingFetch(wire) {
  wire.requests ??= [];
  wire.responses ??= [];
  return async (input, init = {}) => {
    const req = new Request(input, init);
    const headers = Object.fromEntries(req.headers.entries());
    let body = "";
    if (typeof init.body === "string") body = init.body;
    wire.requests.push({ method: req.method, path: new URL(req.url).pathname, headers, body });
    const res = await fetch(input, init);
    wire.responses.push({ method: req.method, status: res.status, headers: Object.fromEntries(res.headers.entries()) });
    return res;
  };
}

export function wireSummary(wire) {
  const out = [];
  for (const r of wire.requests ?? []) {
    const h = Object.fromEntries(Object.entries(r.headers).filter(([k]) => k.startsWith("mcp-")));
    out.push(`>> ${r.method} ${r.path} ${JSON.stringify(h)} ${r.body.slice(0, 120)}`);
  }
  for (const r of wire.responses ?? []) out.push(`<< ${r.method} ${r.status} sid=${r.headers["mcp-session-id"]}`);
  return out;
}

/** Runs a command with a timeout; resolves { code, stdout, stderr } (never rejects on exit code). */
export function run(cmd, args, { cwd, timeoutMs = 30_000, env } = {}) {
  return new Promise((resolveRun) => {
    execFile(
      cmd,
      args,
      { cwd, timeout: timeoutMs, killSignal: "SIGKILL", env: env ?? process.env, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : error.signal || String(error.code)) : 0;
        resolveRun({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
  });
}

export { existsSync };

export const TEST_TIMEOUT_MS = 30_000;

/** Runs fn(launcher); always stops its processes; on failure appends the processes' stderr tails. */
export async function withLauncher(label, fn) {
  const launcher = new Launcher(label);
  try {
    return await fn(launcher);
  } catch (e) {
    const tails = launcher.stderrTails();
    if (tails && e && typeof e === "object" && typeof e.message === "string") e.message += `\n${tails}`;
    throw e;
  } finally {
    await launcher.stopAll();
  }
}

/** Polls an upstream's stats() until predicate holds (bounded); returns the last stats. */
export async function waitForStats(upstream, predicate, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  let s = await upstream.stats();
  while (!predicate(s) && Date.now() < deadline) {
    await sleep(50);
    s = await upstream.stats();
  }
  return s;
}

/** The wire really was the stateless 2026-07-28 era. */
export function assertModernWire(peer, wire, where) {
  const m = (...a) => msg(peer, ...a);
  const methods = wire.requests.map((r) => {
    try {
      return JSON.parse(r.body).method;
    } catch {
      return undefined;
    }
  });
  const summary = wireSummary(wire);
  assert.equal(methods[0], "server/discover", m(`first request via ${where}`, "server/discover", summary));
  assert.ok(!methods.includes("initialize"), m(`requests via ${where}`, "no initialize", summary));
  assert.deepEqual([...new Set(wire.requests.map((r) => r.method))], ["POST"], m(`HTTP methods via ${where}`, "only POST (no GET stream, no DELETE)", summary));
  const versions = [...new Set(wire.requests.map((r) => r.headers["mcp-protocol-version"]))];
  assert.deepEqual(versions, [MODERN_VERSION], m(`mcp-protocol-version request headers via ${where}`, `only ${MODERN_VERSION}`, summary));
  const sent = wire.requests.filter((r) => r.headers["mcp-session-id"]);
  assert.equal(sent.length, 0, m(`requests via ${where}`, "no mcp-session-id request header", summary));
  const minted = wire.responses.filter((r) => r.headers["mcp-session-id"]);
  assert.equal(minted.length, 0, m(`responses via ${where}`, "no mcp-session-id response header (no session minted)", summary));
  const bad = wire.responses.filter((r) => r.status !== 200);
  assert.equal(bad.length, 0, m(`responses via ${where}`, "HTTP 200 for every request", summary));
  for (const r of wire.requests) {
    const body = JSON.parse(r.body);
    if (body.method === undefined || body.method.startsWith("notifications/")) continue;
    assert.equal(
      body.params?._meta?.["io.modelcontextprotocol/protocolVersion"],
      MODERN_VERSION,
      m(`${body.method} request body via ${where}`, `_meta io.modelcontextprotocol/protocolVersion ${MODERN_VERSION}`, r.body.slice(0, 400)),
    );
  }
}

