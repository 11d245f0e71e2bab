// Interop: the TypeScript MCP SDK v2 client (`@modelcontextprotocol/client`
// 2.x, npm), which speaks the 2026-07-28 modern era statelessly
// (`versionNegotiation: { mode: "auto" }`: `server/discover`, then `_meta` on
// every request, no initialize, no session), as a client of the real `tether`
// binary in front of legacy and modern `tether demo-upstream` servers.
//
// The wire is recorded through the transport's `fetch` option to prove the
// modern era was really used: no Mcp-Session-Id anywhere, every request a
// POST carrying `mcp-protocol-version: 2026-07-28`.
//
// Peer: ts-sdk-v2. Every failure message names the peer, the operation and
// what came back. (Calls to server-everything: server-everything.test.mjs.)

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import {
  MODERN_VERSION,
  REQUEST_TIMEOUT_MS,
  TEST_TIMEOUT_MS,
  msg as baseMsg,
  op as baseOp,
  assertModernWire,
  recordingFetch,
  textOf,
  waitForStats,
  wireSummary,
  withLauncher,
} from "./lib/harness.mjs";

const PEER = "ts-sdk-v2";
const msg = (...a) => baseMsg(PEER, ...a);
const op = (...a) => baseOp(PEER, ...a);
const reqOpts = { timeout: REQUEST_TIMEOUT_MS };
const fresh = { ...reqOpts, cacheMode: "bypass" }; // every list/read must hit the wire

/** A v2 client connected with version negotiation `auto`; asserts it settled on the modern era. */
export async function connectV2(url, where, wire = {}) {
  const transport = new StreamableHTTPClientTransport(new URL(url), { fetch: recordingFetch(wire) });
  const client = new Client(
    { name: "tether-interop-ts-v2", version: "1.0.0" },
    { versionNegotiation: { mode: "auto" } },
  );
  await op(`connect (server/discover) via ${where}`, () => client.connect(transport, reqOpts));
  const era = client.getProtocolEra();
  const version = client.getNegotiatedProtocolVersion();
  assert.ok(
    era === "modern" && version === MODERN_VERSION,
    msg(`connect (versionNegotiation auto) via ${where}`, `the modern era, ${MODERN_VERSION}`, { era, version, wire: wireSummary(wire) }),
  );
  return { client, transport, wire };
}

async function exerciseDemo(client, where, prefix = "demo__") {
  const tools = await op(`tools/list via ${where}`, () => client.listTools(undefined, fresh));
  const names = tools.tools.map((t) => t.name).sort();
  assert.ok(names.includes(`${prefix}echo`), msg(`tools/list via ${where}`, `a tool named ${prefix}echo`, names));

  const echo = await op(`tools/call ${prefix}echo via ${where}`, () =>
    client.callTool({ name: `${prefix}echo`, arguments: { text: "héllo ts v2" } }, reqOpts),
  );
  assert.ok(!echo.isError && textOf(echo) === "héllo ts v2", msg(`tools/call ${prefix}echo via ${where}`, "text 'héllo ts v2'", echo));

  const readme = await op(`resources/read demo://readme via ${where}`, () => client.readResource({ uri: "demo://readme" }, fresh));
  assert.deepEqual(readme.contents.map((c) => c.text), ["Tether demo upstream"], msg(`resources/read demo://readme via ${where}`, "one text 'Tether demo upstream'", readme));
  const item = await op(`resources/read demo://items/42 via ${where}`, () => client.readResource({ uri: "demo://items/42" }, fresh));
  assert.deepEqual(item.contents.map((c) => c.text), ["item 42"], msg(`resources/read demo://items/42 via ${where}`, "text 'item 42'", item));

  const prompt = await op(`prompts/get ${prefix}greeting via ${where}`, () =>
    client.getPrompt({ name: `${prefix}greeting`, arguments: { name: "Ada" } }, reqOpts),
  );
  assert.deepEqual(prompt.messages.map((m) => m.content?.text), ["Hello, Ada!"], msg(`prompts/get ${prefix}greeting via ${where}`, "one message 'Hello, Ada!'", prompt));

  const templates = await op(`resources/templates/list via ${where}`, () => client.listResourceTemplates(undefined, fresh));
  const uris = templates.resourceTemplates.map((t) => t.uriTemplate);
  assert.ok(uris.includes("demo://items/{id}"), msg(`resources/templates/list via ${where}`, "template demo://items/{id}", uris));

  const events = [];
  let returned = false;
  const o = `tools/call ${prefix}progress(steps=3) with onprogress via ${where}`;
  const result = await op(o, () =>
    client.callTool({ name: `${prefix}progress`, arguments: { steps: 3, delay_ms: 40 } }, { ...reqOpts, onprogress: (p) => events.push({ ...p, late: returned }) }),
  );
  returned = true;
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(textOf(result), "completed 3 steps", msg(o, "text 'completed 3 steps'", result));
  assert.deepEqual(events.map((e) => e.progress), [1, 2, 3], msg(o, "progress 1, 2, 3", events));
  assert.ok(events.every((e) => !e.late), msg(o, "every progress notification before the result", events));
}

describe(PEER, () => {
  for (const era of ["legacy", "modern"]) {
    it(`2026-07-28 stateless operations via tether /mcp -> ${era} demo upstream`, { timeout: TEST_TIMEOUT_MS }, () =>
      withLauncher("ts-v2", async (l) => {
        const up = await l.upstream(era);
        const gw = await l.gateway({ demo: up.url });
        const where = `tether /mcp -> ${era} upstream`;
        const { client, wire } = await connectV2(gw.url, where);
        try {
          await exerciseDemo(client, where);
        } finally {
          await client.close();
        }
        assertModernWire(PEER, wire, where);
        const stats = await waitForStats(up, (s) => s.live_sessions === 0 && s.initializes === s.deletes);
        if (era === "legacy") {
          // Tether bridges to the legacy upstream through per-call upstream sessions, closed after each call.
          assert.ok(
            stats.modern_requests === 0 && stats.initializes >= 1 && stats.initializes === stats.deletes && stats.live_sessions === 0,
            msg(`per-call upstream sessions via ${where} (upstream /stats)`, ">= 1 initialize, each deleted again, 0 live, 0 modern requests", stats),
          );
        } else {
          assert.ok(
            stats.initializes === 0 && stats.modern_requests >= 7 && stats.tool_calls === 2,
            msg(`modern passthrough via ${where} (upstream /stats)`, "0 initializes, >= 7 modern requests, 2 tool calls", stats),
          );
        }
      }),
    );
  }

  it("2026-07-28 stateless operations via tether /u/demo/mcp (unprefixed)", { timeout: TEST_TIMEOUT_MS }, () =>
    withLauncher("ts-v2", async (l) => {
      const up = await l.upstream("legacy");
      const gw = await l.gateway({ demo: up.url });
      const where = "tether /u/demo/mcp -> legacy upstream";
      const { client, wire } = await connectV2(gw.single("demo"), where);
      try {
        const names = (await op(`tools/list via ${where}`, () => client.listTools(undefined, fresh))).tools.map((t) => t.name);
        assert.ok(names.includes("echo") && !names.some((n) => n.includes("__")), msg(`tools/list via ${where}`, "unprefixed names incl. echo", names));
        await exerciseDemo(client, where, "");
      } finally {
        await client.close();
      }
      assertModernWire(PEER, wire, where);
    }),
  );
});
