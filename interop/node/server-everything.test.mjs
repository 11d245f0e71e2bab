// Interop: `@modelcontextprotocol/server-everything` (the MCP reference server,
// npm, Streamable HTTP bound to 127.0.0.1 through lib/loopback-only.cjs) as an
// upstream of the real `tether` binary, called through Tether by the
// TypeScript SDK v1 client (legacy era, sessions) and the v2 client
// (2026-07-28, stateless; Tether bridges to the legacy upstream).
//
// Peer: server-everything (clients: ts-sdk-v1, ts-sdk-v2; the Python SDK
// calls it in interop/python/test_server_everything.py). Every failure message
// names the peer, the client, the operation and what came back.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { Client as ClientV1 } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport as TransportV1 } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { Client as ClientV2, StreamableHTTPClientTransport as TransportV2 } from "@modelcontextprotocol/client";
import {
  Launcher,
  MODERN_VERSION,
  assertModernWire,
  REQUEST_TIMEOUT_MS,
  TEST_TIMEOUT_MS,
  msg as baseMsg,
  op as baseOp,
  recordingFetch,
  textOf,
  wireSummary,
} from "./lib/harness.mjs";

const PEER = "server-everything";
const reqOpts = { timeout: REQUEST_TIMEOUT_MS };

/** The SDK client's calls, normalised across v1 (callTool(params, schema, opts)) and v2 (callTool(params, opts)). */
function facade(kind, client) {
  const opts = kind === "v2" ? { ...reqOpts, cacheMode: "bypass" } : reqOpts;
  return {
    listTools: () => client.listTools(undefined, opts),
    listPrompts: () => client.listPrompts(undefined, opts),
    callTool: (params, extra = {}) =>
      kind === "v2" ? client.callTool(params, { ...reqOpts, ...extra }) : client.callTool(params, undefined, { ...reqOpts, ...extra }),
    readResource: (uri) => client.readResource({ uri }, opts),
    getPrompt: (name, args) => client.getPrompt({ name, arguments: args }, reqOpts),
  };
}

async function connect(kind, url, wire) {
  const client =
    kind === "v2"
      ? new ClientV2({ name: "tether-interop-ts-v2", version: "1.0.0" }, { versionNegotiation: { mode: "auto" } })
      : new ClientV1({ name: "tether-interop-ts-v1", version: "1.0.0" });
  const Transport = kind === "v2" ? TransportV2 : TransportV1;
  const transport = new Transport(new URL(url), { fetch: recordingFetch(wire) });
  await baseOp(`${PEER} (client ts-sdk-${kind})`, `connect via ${url}`, () => client.connect(transport, reqOpts));
  if (kind === "v2") {
    const got = { era: client.getProtocolEra(), version: client.getNegotiatedProtocolVersion() };
    assert.deepEqual(
      got,
      { era: "modern", version: MODERN_VERSION },
      baseMsg(`${PEER} (client ts-sdk-v2)`, `connect (versionNegotiation auto) via ${url}`, `the modern era, ${MODERN_VERSION}`, got),
    );
  }
  return client;
}

async function exerciseEverything(kind, c, where, prefix) {
  const peer = `${PEER} (client ts-sdk-${kind})`;
  const msg = (...a) => baseMsg(peer, ...a);
  const op = (...a) => baseOp(peer, ...a);

  const names = (await op(`tools/list via ${where}`, () => c.listTools())).tools.map((t) => t.name);
  for (const want of ["echo", "get-sum", "trigger-long-running-operation"]) {
    assert.ok(names.includes(`${prefix}${want}`), msg(`tools/list via ${where}`, `a tool named ${prefix}${want}`, names));
  }

  const echo = await op(`tools/call ${prefix}echo via ${where}`, () => c.callTool({ name: `${prefix}echo`, arguments: { message: `héllo from ${kind}` } }));
  assert.ok(!echo.isError && textOf(echo) === `Echo: héllo from ${kind}`, msg(`tools/call ${prefix}echo via ${where}`, `text 'Echo: héllo from ${kind}'`, echo));

  const sum = await op(`tools/call ${prefix}get-sum via ${where}`, () => c.callTool({ name: `${prefix}get-sum`, arguments: { a: 2, b: 40 } }));
  assert.ok(!sum.isError && (textOf(sum) ?? "").includes("42"), msg(`tools/call ${prefix}get-sum(2, 40) via ${where}`, "a text containing 42", sum));

  const res = await op(`resources/read demo://resource/dynamic/text/5 via ${where}`, () => c.readResource("demo://resource/dynamic/text/5"));
  const texts = res.contents.map((x) => x.text);
  assert.ok(
    texts.length === 1 && (texts[0] ?? "").startsWith("Resource 5: This is a plaintext resource"),
    msg(`resources/read demo://resource/dynamic/text/5 via ${where}`, "one text starting 'Resource 5: This is a plaintext resource'", res),
  );

  const prompt = await op(`prompts/get ${prefix}args-prompt via ${where}`, () => c.getPrompt(`${prefix}args-prompt`, { city: "Lyon" }));
  assert.deepEqual(prompt.messages.map((m) => m.content?.text), ["What's weather in Lyon?"], msg(`prompts/get ${prefix}args-prompt via ${where}`, "one message \"What's weather in Lyon?\"", prompt));

  const simple = await op(`prompts/get ${prefix}simple-prompt via ${where}`, () => c.getPrompt(`${prefix}simple-prompt`, {}));
  assert.deepEqual(
    simple.messages.map((m) => m.content?.text),
    ["This is a simple prompt without arguments."],
    msg(`prompts/get ${prefix}simple-prompt via ${where}`, "one message 'This is a simple prompt without arguments.'", simple),
  );

  const events = [];
  const o = `tools/call ${prefix}trigger-long-running-operation(duration=0.3, steps=3) with onprogress via ${where}`;
  const done = await op(o, () =>
    c.callTool({ name: `${prefix}trigger-long-running-operation`, arguments: { duration: 0.3, steps: 3 } }, { onprogress: (p) => events.push(p) }),
  );
  assert.ok((textOf(done) ?? "").includes("Long running operation completed"), msg(o, "text 'Long running operation completed...'", done));
  assert.deepEqual(events.map((e) => [e.progress, e.total]), [[1, 3], [2, 3], [3, 3]], msg(o, "progress (1,3), (2,3), (3,3)", events));
}

describe(PEER, () => {
  let launcher;
  let gw;
  before(async () => {
    launcher = new Launcher("everything");
    const everything = await launcher.everything();
    gw = await launcher.gateway({ everything: everything.url });
  }, { timeout: TEST_TIMEOUT_MS });
  after(async () => {
    await launcher?.stopAll();
  }, { timeout: TEST_TIMEOUT_MS });

  for (const kind of ["v1", "v2"]) {
    it(`ts-sdk-${kind}: tools, resources, prompts, progress via tether /mcp`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const where = `tether /mcp -> server-everything`;
      const wire = {};
      const client = await connect(kind, gw.url, wire);
      try {
        await exerciseEverything(kind, facade(kind, client), where, "everything__");
      } finally {
        await client.close();
      }
      if (kind === "v2") {
        assertModernWire(`${PEER} (client ts-sdk-v2)`, wire, where);
      } else {
        const sid = wire.responses.find((r) => r.headers["mcp-session-id"]);
        assert.ok(sid, baseMsg(`${PEER} (client ts-sdk-v1)`, `initialize via ${where}`, "an mcp-session-id response header", wireSummary(wire)));
      }
    });

    it(`ts-sdk-${kind}: tools, resources, prompts, progress via tether /u/everything/mcp`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const where = `tether /u/everything/mcp -> server-everything`;
      const wire = {};
      const client = await connect(kind, gw.single("everything"), wire);
      try {
        const c = facade(kind, client);
        await exerciseEverything(kind, c, where, "");
        const prompts = (await c.listPrompts()).prompts.map((p) => p.name);
        assert.ok(
          prompts.includes("simple-prompt") && prompts.includes("args-prompt"),
          baseMsg(`${PEER} (client ts-sdk-${kind})`, `prompts/list via ${where}`, "unprefixed simple-prompt and args-prompt", prompts),
        );
      } finally {
        await client.close();
      }
      if (kind === "v2") assertModernWire(`${PEER} (client ts-sdk-v2)`, wire, where);
    });
  }
});
