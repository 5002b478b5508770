/**
 * `governedTool` with the real Vercel AI SDK: `tool()`, `generateText` and a scripted model from
 * `ai/test`, against the real gateway. A denied tool's `execute` must never run.
 */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";

import { generateText, stepCountIs, tool } from "ai";
import { MockLanguageModelV3 } from "ai/test";
import { z } from "zod";

import {
  GatewayUnavailableError,
  MeshGuardClient,
  MeshGuardError,
  PolicyDeniedError,
  governedTool,
  governedTools,
  resourceFromArguments,
} from "@meshguard/sdk";

import { deadUrl } from "./support/canned.js";
import { Gateway, waitUntil, type AgentIdentity } from "./support/gateway.js";

const TOOLS_POLICY = `name: ts-ai-tools
version: "1"
appliesTo:
  tags: [ts-ai]
rules:
  - name: workspace-reads
    effect: allow
    actions: ["tool:read_file/workspace/*", "tool:search"]
  - name: no-shell
    effect: deny
    actions: ["tool:run_shell"]
    reason: "no shell for agents"
defaultEffect: deny
humanInTheLoop:
  requireApproval: ["tool:send_email"]
  timeoutSeconds: 600
`;
const T = { timeout: 30_000 };

const usage = {
  inputTokens: { total: 10, noCache: 10, cacheRead: undefined, cacheWrite: undefined },
  outputTokens: { total: 5, text: 5, reasoning: undefined },
};

/** A model that asks for `calls` in its first step and answers text in its second. */
function scriptedModel(calls: { toolName: string; input: unknown }[]): MockLanguageModelV3 {
  return new MockLanguageModelV3({
    doGenerate: [
      {
        content: calls.map((call, index) => ({
          type: "tool-call" as const,
          toolCallId: `call-${index}`,
          toolName: call.toolName,
          input: JSON.stringify(call.input),
        })),
        finishReason: { unified: "tool-calls", raw: "tool_calls" },
        usage,
        warnings: [],
      },
      {
        content: [{ type: "text", text: "done" }],
        finishReason: { unified: "stop", raw: "stop" },
        usage,
        warnings: [],
      },
    ],
  });
}

describe("governedTool with the AI SDK", () => {
  const gateway = new Gateway();

  before(async () => {
    await gateway.start();
    await gateway.admin().applyPolicy(TOOLS_POLICY);
  });
  after(() => gateway.dispose());

  const agent = (): Promise<AgentIdentity> => gateway.createAgent("ai-agent", ["ts-ai"]);

  test(
    "a denied tool never runs; an allowed one does, named as the MCP proxy names it",
    T,
    async () => {
      const trace = `ai-${randomUUID()}`;
      const client = gateway.client(await agent(), { traceId: trace });
      const ran: string[] = [];
      const readFile = tool({
        description: "Read a file of the workspace",
        inputSchema: z.object({ path: z.string() }),
        execute: async ({ path }) => {
          ran.push(`read ${path}`);
          return `contents of ${path}`;
        },
      });
      const runShell = tool({
        description: "Run a shell command",
        inputSchema: z.object({ command: z.string() }),
        execute: async ({ command }) => {
          ran.push(`shell ${command}`);
          return "ran";
        },
      });
      const result = await generateText({
        model: scriptedModel([
          { toolName: "read_file", input: { path: "workspace/notes.txt" } },
          { toolName: "run_shell", input: { command: "rm -rf /" } },
        ]),
        tools: {
          read_file: governedTool(client, "read_file", readFile),
          run_shell: governedTool(client, "run_shell", runShell),
        },
        prompt: "tidy up",
        stopWhen: stepCountIs(3),
      });
      assert.deepEqual(ran, ["read workspace/notes.txt"]);
      assert.equal(result.text, "done");
      const [first] = result.steps;
      const results = first?.toolResults ?? [];
      assert.deepEqual(
        results.map((part) => [part.toolName, part.output]),
        [["read_file", "contents of workspace/notes.txt"]],
      );
      const errors = first?.content.filter((part) => part.type === "tool-error") ?? [];
      assert.equal(errors.length, 1);
      const denial = errors[0]?.type === "tool-error" ? errors[0].error : undefined;
      assert.ok(denial instanceof PolicyDeniedError, String(denial));
      assert.equal(denial.code, "denied_by_rule");
      assert.equal(denial.rule, "no-shell");

      const checks = await gateway.audit({ traceId: trace, kind: "check" });
      const byAction = Object.fromEntries(checks.map((event) => [event["action"], event]));
      assert.equal(byAction["tool:read_file"]?.["resource"], "workspace/notes.txt");
      assert.equal(byAction["tool:read_file"]?.["decision"], "allow");
      assert.deepEqual(byAction["tool:read_file"]?.["context"], {
        tool: "read_file",
        arguments: { path: "workspace/notes.txt" },
      });
      assert.equal(byAction["tool:run_shell"]?.["resource"], "*");
      assert.equal(byAction["tool:run_shell"]?.["code"], "denied_by_rule");
      const records = await gateway.audit({ traceId: trace, kind: "record" });
      assert.deepEqual(
        records.map((event) => [event["action"], event["status"]]),
        [["tool:read_file", "success"]],
      );
    },
  );

  test("onDeny gives the model a text instead of an error", T, async () => {
    const client = gateway.client(await agent());
    let ran = false;
    const shell = governedTool(
      client,
      "run_shell",
      tool({
        inputSchema: z.object({ command: z.string() }),
        execute: async () => {
          ran = true;
          return "ran";
        },
      }),
      { onDeny: (error) => `refused: ${error.reason}` },
    );
    const result = await generateText({
      model: scriptedModel([{ toolName: "run_shell", input: { command: "ls" } }]),
      tools: { run_shell: shell },
      prompt: "list",
      stopWhen: stepCountIs(3),
    });
    assert.equal(ran, false);
    const outputs = result.steps[0]?.toolResults.map((part) => String(part.output)) ?? [];
    assert.equal(outputs.length, 1);
    assert.match(
      outputs[0] ?? "",
      /^refused: Action 'tool:run_shell' denied by rule 'no-shell' .*no shell for agents$/,
    );
  });

  test("a tool cannot run when the gateway cannot be asked", T, async () => {
    const client = new MeshGuardClient({ gatewayUrl: await deadUrl(), agentToken: "token" });
    let ran = false;
    const search = governedTool(
      client,
      "search",
      tool({
        inputSchema: z.object({ query: z.string() }),
        execute: async () => {
          ran = true;
          return [];
        },
      }),
      // onDeny is for denials only: an outage still throws.
      { onDeny: () => "denied" },
    );
    const result = await generateText({
      model: scriptedModel([{ toolName: "search", input: { query: "x" } }]),
      tools: { search },
      prompt: "find",
      stopWhen: stepCountIs(3),
    });
    assert.equal(ran, false);
    const errors = result.steps[0]?.content.filter((part) => part.type === "tool-error") ?? [];
    assert.equal(errors.length, 1);
    assert.ok(
      errors[0]?.type === "tool-error" && errors[0].error instanceof GatewayUnavailableError,
    );
  });

  test("a tool that needs approval waits for it, bound to its arguments", T, async () => {
    const identity = await agent();
    const client = gateway.client(identity);
    const admin = gateway.admin();
    const sent: string[] = [];
    const sendEmail = governedTool(
      client,
      "send_email",
      tool({
        inputSchema: z.object({ to: z.string(), body: z.string() }),
        execute: async ({ to }) => {
          sent.push(to);
          return "sent";
        },
      }),
      { approvalWaitMs: 20_000, resource: (input) => input.to },
    );
    let shown: Record<string, unknown> | undefined;
    const human = (async () => {
      const [pending] =
        (await waitUntil(async () => {
          const mine = (await admin.listApprovals({ status: "pending" })).filter(
            (approval) => approval["agentId"] === identity.id,
          );
          return mine.length > 0 ? mine : undefined;
        })) ?? [];
      shown = pending;
      await admin.approve(String(pending?.["id"]));
    })();
    const output = await sendEmail.execute?.(
      { to: "ops@example.com", body: "hello" },
      { toolCallId: "call-1", messages: [] },
    );
    await human;
    assert.equal(output, "sent");
    assert.deepEqual(sent, ["ops@example.com"]);
    assert.equal(shown?.["action"], "tool:send_email");
    assert.equal(shown?.["resource"], "ops@example.com");
    assert.deepEqual((shown?.["arguments"] as Record<string, unknown>)["value"], {
      to: "ops@example.com",
      body: "hello",
    });
  });

  test("a streaming tool is checked before its first value", T, async () => {
    const client = gateway.client(await agent());
    const yielded: string[] = [];
    const streaming = governedTools(client, {
      search: tool({
        inputSchema: z.object({ query: z.string() }),
        async *execute({ query }) {
          yielded.push(query);
          yield `first ${query}`;
          yield `last ${query}`;
        },
      }),
      run_shell: tool({
        inputSchema: z.object({ command: z.string() }),
        async *execute() {
          yielded.push("shell");
          yield "ran";
        },
      }),
    });
    const result = await generateText({
      model: scriptedModel([
        { toolName: "search", input: { query: "docs" } },
        { toolName: "run_shell", input: { command: "ls" } },
      ]),
      tools: streaming,
      prompt: "go",
      stopWhen: stepCountIs(3),
    });
    assert.deepEqual(yielded, ["docs"]);
    assert.deepEqual(
      result.steps[0]?.toolResults.map((part) => part.output),
      ["last docs"],
    );
  });

  test("names and shapes", () => {
    assert.equal(resourceFromArguments({ path: "a.txt", url: "https://x" }), "a.txt");
    assert.equal(resourceFromArguments({ path: 5, uri: "file:///b" }), "file:///b");
    assert.equal(resourceFromArguments({ filename: "c.txt" }), "c.txt");
    assert.equal(resourceFromArguments({ path: "", uri: "u" }), "*");
    assert.equal(resourceFromArguments({ query: "x" }), "*");
    assert.equal(resourceFromArguments("text"), "*");
    assert.equal(resourceFromArguments({ target: "t", path: "p" }, "target"), "t");
    assert.equal(resourceFromArguments({ path: "p" }, "target"), "*");
    const client = new MeshGuardClient({ gatewayUrl: "http://127.0.0.1:1", agentToken: "t" });
    const original = tool({
      description: "kept",
      inputSchema: z.object({ path: z.string() }),
      execute: async () => "x",
    });
    const wrapped = governedTool(client, "read_file", original);
    assert.equal(wrapped.description, "kept");
    assert.equal(wrapped.inputSchema, original.inputSchema);
    assert.notEqual(wrapped.execute, original.execute);
    assert.throws(
      () => governedTool(client, "client_side", tool({ inputSchema: z.object({}) })),
      MeshGuardError,
    );
  });
});
