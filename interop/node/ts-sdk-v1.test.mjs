// Interop: the TypeScript MCP SDK v1 (`@modelcontextprotocol/sdk` 1.32.x, npm)
// `Client` + `StreamableHTTPClientTransport` as a client of the real `tether`
// binary, which federates real `tether demo-upstream` servers.
//
// Peer: ts-sdk-v1. Every failure message names the peer, the operation and
// what came back. (Calls to server-everything: server-everything.test.mjs.)

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  REQUEST_TIMEOUT_MS,
  TEST_TIMEOUT_MS,
  msg as baseMsg,
  op as baseOp,
  recordingFetch,
  textOf,
  waitForStats,
  wireSummary,
  withLauncher,
} from "./lib/harness.mjs";

const PEER = "ts-sdk-v1";
const msg = (...a) => baseMsg(PEER, ...a);
const op = (...a) => baseOp(PEER, ...a);
const reqOpts = { timeout: REQUEST_TIMEOUT_MS };

/** A connected v1 client (legacy initialize handshake) over Streamable HTTP. */
export async function connectV1(url, wire = {}, options = {}) {
  const transport = new StreamableHTTPClientTransport(new URL(url), { fetch: recordingFetch(wire) });
  const client = new Client({ name: "tether-interop-ts-v1", version: "1.0.0" }, options);
  await op(`connect (initialize) via ${url}`, () => client.connect(transport, reqOpts));
  return { client, transport, wire };
}

async function exerciseDemo(client, where, prefix = "demo__") {
  const tools = await op(`tools/list via ${where}`, () => client.listTools(undefined, reqOpts));
  const names = tools.tools.map((t) => t.name).sort();
  assert.ok(names.includes(`${prefix}echo`), msg(`tools/list via ${where}`, `a tool named ${prefix}echo`, names));

  const echo = await op(`tools/call ${prefix}echo via ${where}`, () =>
    client.callTool({ name: `${prefix}echo`, arguments: { text: "héllo ts v1" } }, undefined, reqOpts),
  );
  assert.ok(!echo.isError && textOf(echo) === "héllo ts v1", msg(`tools/call ${prefix}echo via ${where}`, "text 'héllo ts v1'", echo));

  const readme = await op(`resources/read demo://readme via ${where}`, () => client.readResource({ uri: "demo://readme" }, reqOpts));
  assert.deepEqual(
    readme.contents.map((c) => c.text),
    ["Tether demo upstream"],
    msg(`resources/read demo://readme via ${where}`, "one text 'Tether demo upstream'", readme),
  );
  const item = await op(`resources/read demo://items/42 via ${where}`, () => client.readResource({ uri: "demo://items/42" }, reqOpts));
  assert.deepEqual(item.contents.map((c) => c.text), ["item 42"], msg(`resources/read demo://items/42 via ${where}`, "text 'item 42'", item));

  const prompt = await op(`prompts/get ${prefix}greeting via ${where}`, () =>
    client.getPrompt({ name: `${prefix}greeting`, arguments: { name: "Ada" } }, reqOpts),
  );
  assert.deepEqual(
    prompt.messages.map((m) => m.content?.text),
    ["Hello, Ada!"],
    msg(`prompts/get ${prefix}greeting via ${where}`, "one message 'Hello, Ada!'", prompt),
  );

  const templates = await op(`resources/templates/list via ${where}`, () => client.listResourceTemplates(undefined, reqOpts));
  const uris = templates.resourceTemplates.map((t) => t.uriTemplate);
  assert.ok(uris.includes("demo://items/{id}"), msg(`resources/templates/list via ${where}`, "template demo://items/{id}", uris));
}

async function exerciseProgress(client, where, prefix = "demo__") {
  const events = [];
  let returned = false;
  const o = `tools/call ${prefix}progress(steps=4) with onprogress via ${where}`;
  const result = await op(o, () =>
    client.callTool({ name: `${prefix}progress`, arguments: { steps: 4, delay_ms: 40 } }, undefined, {
      ...reqOpts,
      onprogress: (p) => events.push({ ...p, late: returned }),
    }),
  );
  returned = true;
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(textOf(result), "completed 4 steps", msg(o, "text 'completed 4 steps'", result));
  assert.deepEqual(
    events.map((e) => e.progress),
    [1, 2, 3, 4],
    msg(o, "progress 1, 2, 3, 4", events),
  );
  assert.ok(events.every((e) => !e.late), msg(o, "every progress notification before the result", events));
}

describe(PEER, () => {
  for (const era of ["legacy", "modern"]) {
    it(`basic operations via tether /mcp -> ${era} demo upstream`, { timeout: TEST_TIMEOUT_MS }, () =>
      withLauncher("ts-v1", async (l) => {
        const up = await l.upstream(era);
        const gw = await l.gateway({ demo: up.url });
        const where = `tether /mcp -> ${era} upstream`;
        const { client, transport, wire } = await connectV1(gw.url);
        try {
          assert.ok(transport.sessionId, msg(`initialize via ${where}`, "an Mcp-Session-Id", wireSummary(wire)));
          await exerciseDemo(client, where);
        } finally {
          await client.close();
        }
      }),
    );

    it(`progress notifications via onprogress through tether /mcp -> ${era} demo upstream`, { timeout: TEST_TIMEOUT_MS }, () =>
      withLauncher("ts-v1", async (l) => {
        const up = await l.upstream(era);
        const gw = await l.gateway({ demo: up.url });
        const { client } = await connectV1(gw.url);
        try {
          await exerciseProgress(client, `tether /mcp -> ${era} upstream`);
        } finally {
          await client.close();
        }
      }),
    );
  }

  it("single-upstream endpoint /u/demo/mcp: unprefixed names", { timeout: TEST_TIMEOUT_MS }, () =>
    withLauncher("ts-v1", async (l) => {
      const up = await l.upstream("legacy");
      const gw = await l.gateway({ demo: up.url });
      const where = "tether /u/demo/mcp -> legacy upstream";
      const { client } = await connectV1(gw.single("demo"));
      try {
        const info = client.getServerVersion();
        assert.ok(info?.name, msg(`initialize via ${where}`, "serverInfo mirrored from the upstream", info));
        const names = (await op(`tools/list via ${where}`, () => client.listTools(undefined, reqOpts))).tools.map((t) => t.name);
        assert.ok(names.includes("echo") && !names.some((n) => n.includes("__")), msg(`tools/list via ${where}`, "unprefixed names incl. echo", names));
        await exerciseDemo(client, where, "");
        await exerciseProgress(client, where, "");
      } finally {
        await client.close();
      }
    }),
  );

  it("two concurrent sessions keep separate upstream sessions; terminateSession ends them", { timeout: TEST_TIMEOUT_MS }, () =>
    withLauncher("ts-v1", async (l) => {
      const up = await l.upstream("legacy");
      const gw = await l.gateway({ demo: up.url });
      const where = "tether /mcp -> legacy upstream";
      const a = await connectV1(gw.url);
      const b = await connectV1(gw.url);
      try {
        const bump = async (c, label, n) => {
          for (let i = 0; i < n; i++) {
            const r = await op(`tools/call demo__counter_increment (session ${label}) via ${where}`, () =>
              c.client.callTool({ name: "demo__counter_increment", arguments: {} }, undefined, reqOpts),
            );
            assert.ok(!r.isError, msg(`tools/call demo__counter_increment (session ${label}) via ${where}`, "a result", r));
          }
        };
        await Promise.all([bump(a, "A", 5), bump(b, "B", 3)]);
        for (const [label, c, want] of [["A", a, 5], ["B", b, 3]]) {
          const r = await op(`tools/call demo__counter_get (session ${label}) via ${where}`, () =>
            c.client.callTool({ name: "demo__counter_get", arguments: {} }, undefined, reqOpts),
          );
          assert.deepEqual(r.structuredContent, { count: want }, msg(`tools/call demo__counter_get (session ${label}) via ${where}`, `structuredContent {count: ${want}}`, r));
        }
        const stats = await up.stats();
        assert.equal(stats.initializes, 2, msg(`two sessions via ${where} (upstream /stats)`, "exactly 2 upstream initializes", stats));
        await op(`DELETE (terminateSession) session A via ${where}`, () => a.transport.terminateSession());
        await op(`DELETE (terminateSession) session B via ${where}`, () => b.transport.terminateSession());
        const after = await waitForStats(up, (s) => s.deletes >= 2);
        assert.ok(after.deletes === 2 && after.live_sessions === 0, msg(`terminateSession x2 via ${where} (upstream /stats)`, "2 upstream deletes, 0 live sessions within 5 s", after));
      } finally {
        await a.client.close();
        await b.client.close();
      }
    }),
  );
});
