/**
 * `governMcpClient` with the real MCP TypeScript SDK: a `Client` talking to an in-process
 * `McpServer` over `InMemoryTransport`, checked by the real gateway. A denied call never
 * reaches the server.
 */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, beforeEach, describe, test } from "node:test";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { z } from "zod";

import {
  ApprovalRequiredError,
  MeshGuardClient,
  MeshGuardError,
  PolicyDeniedError,
  governMcpClient,
} from "@meshguard/sdk";

import { deadUrl } from "./support/canned.js";
import { Gateway, type AgentIdentity } from "./support/gateway.js";

const MCP_POLICY = `name: ts-mcp-files
version: "1"
appliesTo:
  tags: [ts-mcp]
rules:
  - name: docs-reads
    effect: allow
    actions:
      - "mcp:files/read_file/docs/*"
      - "mcp:files/broken"
      - "mcp:files/resources/read"
      - "mcp:files/prompts/summary"
      - "read:docs/*"
  - name: no-deletes
    effect: deny
    actions: ["mcp:files/delete_file"]
defaultEffect: deny
humanInTheLoop:
  requireApproval: ["mcp:files/publish"]
  timeoutSeconds: 600
`;
const T = { timeout: 30_000 };

/** What the server's handlers were asked to do. */
let served: string[] = [];

async function connectedClient(): Promise<Client> {
  const server = new McpServer({ name: "files", version: "1.0.0" });
  server.registerTool(
    "read_file",
    { description: "Read a file", inputSchema: { path: z.string() } },
    async ({ path }) => {
      served.push(`read_file ${path}`);
      return { content: [{ type: "text", text: `contents of ${path}` }] };
    },
  );
  server.registerTool(
    "delete_file",
    { description: "Delete a file", inputSchema: { path: z.string() } },
    async ({ path }) => {
      served.push(`delete_file ${path}`);
      return { content: [{ type: "text", text: "deleted" }] };
    },
  );
  server.registerTool("broken", { description: "Always fails" }, async () => {
    served.push("broken");
    return { content: [{ type: "text", text: "it broke" }], isError: true };
  });
  server.registerTool(
    "publish",
    { description: "Publish a post", inputSchema: { text: z.string() } },
    async ({ text }) => {
      served.push(`publish ${text}`);
      return { content: [{ type: "text", text: "published" }] };
    },
  );
  server.registerResource(
    "doc",
    "file:///docs/a.md",
    { description: "A document" },
    async (uri) => {
      served.push(`resource ${uri.href}`);
      return { contents: [{ uri: uri.href, text: "# A" }] };
    },
  );
  server.registerPrompt(
    "summary",
    { description: "Summarise a file", argsSchema: { path: z.string() } },
    ({ path }) => {
      served.push(`prompt ${path}`);
      return { messages: [{ role: "user", content: { type: "text", text: `Summarise ${path}` } }] };
    },
  );
  const [clientTransport, serverTransport] = InMemoryTransport.createLinkedPair();
  await server.connect(serverTransport);
  const client = new Client({ name: "ts-tests", version: "1.0.0" });
  await client.connect(clientTransport);
  return client;
}

function textOf(result: unknown): string {
  const content = (result as { content?: { type: string; text?: string }[] }).content ?? [];
  return content.map((part) => part.text ?? "").join("\n");
}

describe("governMcpClient with the MCP SDK", () => {
  const gateway = new Gateway();
  const clients: Client[] = [];

  before(async () => {
    await gateway.start();
    await gateway.admin().applyPolicy(MCP_POLICY);
  });
  beforeEach(() => {
    served = [];
  });
  after(async () => {
    for (const client of clients) await client.close();
    await gateway.dispose();
  });

  const governed = async (
    meshguard: MeshGuardClient,
    options: Partial<Parameters<typeof governMcpClient>[2]> = {},
  ): Promise<Client> => {
    const client = await connectedClient();
    clients.push(client);
    return governMcpClient(meshguard, client, { server: "files", ...options });
  };
  const agent = (): Promise<AgentIdentity> => gateway.createAgent("mcp-agent", ["ts-mcp"]);

  test(
    "an allowed call reaches the server and is recorded; a denied one never does",
    T,
    async () => {
      const trace = `mcp-${randomUUID()}`;
      const mcp = await governed(gateway.client(await agent(), { traceId: trace }));

      const read = await mcp.callTool({ name: "read_file", arguments: { path: "docs/a.md" } });
      assert.equal(read.isError, undefined);
      assert.equal(textOf(read), "contents of docs/a.md");

      const deleted = await mcp.callTool({ name: "delete_file", arguments: { path: "docs/a.md" } });
      assert.equal(deleted.isError, true);
      assert.equal(
        textOf(deleted),
        "MeshGuard denied `delete_file`: Action 'mcp:files/delete_file' denied by rule 'no-deletes' " +
          "of policy 'ts-mcp-files' (policy ts-mcp-files, rule no-deletes)",
      );
      const outside = await mcp.callTool({ name: "read_file", arguments: { path: "/etc/passwd" } });
      assert.equal(outside.isError, true);
      assert.match(textOf(outside), /^MeshGuard denied `read_file`: .*\(policy ts-mcp-files\)$/);
      const broken = await mcp.callTool({ name: "broken", arguments: {} });
      assert.equal(broken.isError, true);
      assert.deepEqual(served, ["read_file docs/a.md", "broken"]);

      const checks = await gateway.audit({ traceId: trace, kind: "check" });
      assert.deepEqual(
        checks
          .map((event) => [event["action"], event["resource"], event["code"]])
          .sort((a, b) => String(a).localeCompare(String(b))),
        [
          ["mcp:files/broken", "*", "allowed"],
          ["mcp:files/delete_file", "docs/a.md", "denied_by_rule"],
          ["mcp:files/read_file", "/etc/passwd", "default_deny"],
          ["mcp:files/read_file", "docs/a.md", "allowed"],
        ],
      );
      const readCheck = checks.find(
        (event) => event["resource"] === "docs/a.md" && event["code"] === "allowed",
      );
      assert.deepEqual(readCheck?.["context"], {
        server: "files",
        tool: "read_file",
        arguments: { path: "docs/a.md" },
      });
      const records = await gateway.audit({ traceId: trace, kind: "record" });
      assert.deepEqual(records.map((event) => [event["action"], event["status"]]).sort(), [
        ["mcp:files/broken", "error"],
        ["mcp:files/read_file", "success"],
      ]);
      const readRecord = records.find((event) => event["action"] === "mcp:files/read_file");
      const context = readRecord?.["context"] as Record<string, unknown>;
      assert.equal(context["server"], "files");
      assert.equal(context["tool"], "read_file");
      assert.equal(context["check_audit_id"], readCheck?.["id"]);
    },
  );

  test("resources and prompts are governed too", T, async () => {
    const mcp = await governed(gateway.client(await agent()));
    const resource = await mcp.readResource({ uri: "file:///docs/a.md" });
    assert.deepEqual(resource.contents, [{ uri: "file:///docs/a.md", text: "# A" }]);
    const prompt = await mcp.getPrompt({ name: "summary", arguments: { path: "docs/a.md" } });
    assert.equal(prompt.messages.length, 1);
    assert.deepEqual(served, ["resource file:///docs/a.md", "prompt docs/a.md"]);
    // Listing is not an action: it is untouched.
    const tools = await mcp.listTools();
    assert.ok(tools.tools.some((listed) => listed.name === "delete_file"));
  });

  test("a mapping checks a tool as another action", T, async () => {
    const trace = `mcp-${randomUUID()}`;
    const mcp = await governed(gateway.client(await agent(), { traceId: trace }), {
      tools: { delete_file: { action: "read:docs", resource: "path" } },
    });
    const result = await mcp.callTool({ name: "delete_file", arguments: { path: "a.md" } });
    assert.equal(result.isError, undefined);
    assert.deepEqual(served, ["delete_file a.md"]);
    const [check] = await gateway.audit({ traceId: trace, kind: "check" });
    assert.equal(check?.["action"], "read:docs");
    assert.equal(check?.["resource"], "a.md");
  });

  test(
    "a call that needs a human names the approval, and goes through once approved",
    T,
    async () => {
      const mcp = await governed(gateway.client(await agent()));
      const first = await mcp.callTool({ name: "publish", arguments: { text: "hello" } });
      assert.equal(first.isError, true);
      const match =
        /Approval id: (\S+)\. An operator approves it with `meshguard approval approve \1`/.exec(
          textOf(first),
        );
      assert.ok(match, textOf(first));
      assert.deepEqual(served, []);
      await gateway.admin().approve(match[1] ?? "");
      const second = await mcp.callTool({ name: "publish", arguments: { text: "hello" } });
      assert.equal(textOf(second), "published");
      assert.deepEqual(served, ["publish hello"]);
    },
  );

  test("with a wait, the call waits for the human", T, async () => {
    const identity = await agent();
    const admin = gateway.admin();
    const mcp = await governed(gateway.client(identity), { approvalWaitMs: 20_000 });
    const approving = (async () => {
      for (let attempt = 0; attempt < 100; attempt += 1) {
        const mine = (await admin.listApprovals({ status: "pending" })).filter(
          (approval) => approval["agentId"] === identity.id,
        );
        if (mine.length > 0) {
          await admin.denyApproval(String(mine[0]?.["id"]), "not today");
          return;
        }
        await new Promise((done) => setTimeout(done, 100));
      }
    })();
    const result = await mcp.callTool({ name: "publish", arguments: { text: "news" } });
    await approving;
    assert.equal(result.isError, true);
    assert.match(textOf(result), /did not let it through \(a human denied it\)/);
    assert.deepEqual(served, []);
  });

  test("onBlocked: throw gives the SDK's errors", T, async () => {
    const mcp = await governed(gateway.client(await agent()), { onBlocked: "throw" });
    await assert.rejects(
      mcp.callTool({ name: "delete_file", arguments: { path: "docs/a.md" } }),
      (error) => error instanceof PolicyDeniedError && error.code === "denied_by_rule",
    );
    await assert.rejects(
      mcp.callTool({ name: "publish", arguments: { text: "x" } }),
      ApprovalRequiredError,
    );
    assert.deepEqual(served, []);
  });

  test("a gateway that cannot be asked stops every call", T, async () => {
    const meshguard = new MeshGuardClient({ gatewayUrl: await deadUrl(), agentToken: "token" });
    const mcp = await governed(meshguard);
    const result = await mcp.callTool({ name: "read_file", arguments: { path: "docs/a.md" } });
    assert.equal(result.isError, true);
    assert.match(
      textOf(result),
      /^MeshGuard could not check `read_file`, so it was not called: MeshGuard gateway at .* is unreachable/,
    );
    await assert.rejects(mcp.readResource({ uri: "file:///docs/a.md" }), MeshGuardError);
    const revoked = await agent();
    await gateway.admin().revokeAgent(revoked.name);
    const refused = await (
      await governed(gateway.client(revoked))
    ).callTool({
      name: "read_file",
      arguments: { path: "docs/a.md" },
    });
    assert.match(textOf(refused), /^MeshGuard could not check `read_file`, so it was not called: /);
    assert.deepEqual(served, []);
  });

  test("a server name must be a name, and a client is governed once", T, async () => {
    const meshguard = new MeshGuardClient({ gatewayUrl: "http://127.0.0.1:1", agentToken: "t" });
    const client = await connectedClient();
    clients.push(client);
    assert.throws(() => governMcpClient(meshguard, client, { server: "Files!" }), MeshGuardError);
    assert.throws(
      () =>
        governMcpClient(meshguard, client, { server: "files", tools: { x: { action: "read:*" } } }),
      MeshGuardError,
    );
    governMcpClient(meshguard, client, { server: "files" });
    assert.throws(() => governMcpClient(meshguard, client, { server: "files" }), MeshGuardError);
  });
});
