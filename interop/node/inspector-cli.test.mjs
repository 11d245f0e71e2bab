// Interop: the MCP Inspector CLI (`@modelcontextprotocol/inspector-cli` 1.0.x,
// npm) -- `mcp-inspector-cli --cli URL --transport http --method ...` -- as a
// client of the real `tether` binary (Streamable HTTP), in front of the demo
// upstream and server-everything.
//
// Quirk of the CLI: it looks for its own package.json as `../package.json`
// relative to the *working directory* (fs.existsSync) and then imports it
// relative to its module, so it only starts with a working directory one level
// below a folder holding a package.json. It is run from its own build/ folder.
//
// Peer: inspector-cli. Every failure message names the peer, the operation and
// what came back (exit code, stdout, stderr).

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import { TEST_TIMEOUT_MS, msg as baseMsg, run, textOf, withLauncher } from "./lib/harness.mjs";

const PEER = "inspector-cli";
const msg = (...a) => baseMsg(PEER, ...a);
const require = createRequire(import.meta.url);
const CLI = require.resolve("@modelcontextprotocol/inspector-cli/build/cli.js");
const CLI_TIMEOUT_MS = 30_000;

/** Runs the inspector CLI against url; returns the parsed JSON it printed (asserts exit 0 and JSON). */
async function inspector(url, where, method, ...args) {
  const argv = [CLI, "--cli", url, "--transport", "http", "--method", method, ...args];
  const operation = `${method}${args.length ? " " + args.join(" ") : ""} via ${where}`;
  const r = await run(process.execPath, argv, { cwd: dirname(CLI), timeoutMs: CLI_TIMEOUT_MS });
  const got = { exit: r.code, stdout: r.stdout.slice(-2000), stderr: r.stderr.slice(-2000) };
  assert.equal(r.code, 0, msg(operation, "exit code 0", got));
  try {
    return JSON.parse(r.stdout);
  } catch {
    assert.fail(msg(operation, "JSON on stdout", got));
  }
}

describe(PEER, () => {
  for (const era of ["legacy", "modern"]) {
    it(`tools/list and tools/call via tether /mcp -> ${era} demo upstream`, { timeout: TEST_TIMEOUT_MS * 2 }, () =>
      withLauncher("inspector", async (l) => {
        const up = await l.upstream(era);
        const gw = await l.gateway({ demo: up.url });
        const where = `tether /mcp -> ${era} upstream`;
        const list = await inspector(gw.url, where, "tools/list");
        const names = (list.tools ?? []).map((t) => t.name);
        for (const want of ["demo__echo", "demo__counter_increment", "demo__progress"]) {
          assert.ok(names.includes(want), msg(`tools/list via ${where}`, `a tool named ${want}`, list));
        }
        const echo = await inspector(gw.url, where, "tools/call", "--tool-name", "demo__echo", "--tool-arg", "text=héllo inspector");
        assert.ok(!echo.isError && textOf(echo) === "héllo inspector", msg(`tools/call demo__echo via ${where}`, "text 'héllo inspector'", echo));
        const prog = await inspector(gw.url, where, "tools/call", "--tool-name", "demo__progress", "--tool-arg", "steps=2", "delay_ms=10");
        assert.equal(textOf(prog), "completed 2 steps", msg(`tools/call demo__progress via ${where}`, "text 'completed 2 steps'", prog));
      }),
    );
  }

  it("tools/list and tools/call via tether /u/demo/mcp (unprefixed)", { timeout: TEST_TIMEOUT_MS * 2 }, () =>
    withLauncher("inspector", async (l) => {
      const up = await l.upstream("legacy");
      const gw = await l.gateway({ demo: up.url });
      const url = gw.single("demo");
      const where = "tether /u/demo/mcp -> legacy upstream";
      const list = await inspector(url, where, "tools/list");
      const names = (list.tools ?? []).map((t) => t.name);
      assert.ok(names.includes("echo") && !names.some((n) => n.includes("__")), msg(`tools/list via ${where}`, "unprefixed names incl. echo", names));
      const echo = await inspector(url, where, "tools/call", "--tool-name", "echo", "--tool-arg", "text=single");
      assert.equal(textOf(echo), "single", msg(`tools/call echo via ${where}`, "text 'single'", echo));
    }),
  );

  it("tools/list and tools/call via tether /mcp -> server-everything", { timeout: TEST_TIMEOUT_MS * 2 }, () =>
    withLauncher("inspector", async (l) => {
      const everything = await l.everything();
      const gw = await l.gateway({ everything: everything.url });
      const where = "tether /mcp -> server-everything";
      const list = await inspector(gw.url, where, "tools/list");
      const names = (list.tools ?? []).map((t) => t.name);
      assert.ok(names.includes("everything__echo") && names.includes("everything__get-sum"), msg(`tools/list via ${where}`, "everything__echo and everything__get-sum", names));
      const echo = await inspector(gw.url, where, "tools/call", "--tool-name", "everything__echo", "--tool-arg", "message=hi everything");
      assert.equal(textOf(echo), "Echo: hi everything", msg(`tools/call everything__echo via ${where}`, "text 'Echo: hi everything'", echo));
      const sum = await inspector(gw.url, where, "tools/call", "--tool-name", "everything__get-sum", "--tool-arg", "a=19", "b=23");
      assert.ok((textOf(sum) ?? "").includes("42"), msg(`tools/call everything__get-sum(19, 23) via ${where}`, "a text containing 42", sum));
    }),
  );
});
