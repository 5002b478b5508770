/**
 * Governed calls for an MCP client (`@modelcontextprotocol/sdk`'s `Client`, or anything with the
 * same methods): each `callTool`, `readResource` and `getPrompt` is checked by the gateway before
 * the server sees it, named and answered as `meshguard mcp run` does (SPEC section 10), so one
 * policy governs a server whether the client goes through the proxy or through this SDK. Written
 * against the shape of the client, not the package, so this SDK keeps no runtime dependency.
 */

import type { MeshGuardClient } from "./client.js";
import { MeshGuardError } from "./errors.js";
import { resourceFromArguments } from "./naming.js";
import type { JsonObject, PolicyDecision } from "./types.js";

/** The request options the MCP client takes (the part used here). */
export interface McpRequestOptionsLike {
  signal?: AbortSignal;
}

/** The methods of an MCP client that reach the server and are governed. */
export interface McpClientLike {
  // `any` keeps the real client's overloads and result types assignable.
  callTool(
    params: { name: string; arguments?: Record<string, unknown> },
    ...rest: any[]
  ): Promise<any>;
  readResource?(params: { uri: string }, ...rest: any[]): Promise<any>;
  getPrompt?(
    params: { name: string; arguments?: Record<string, string> },
    ...rest: any[]
  ): Promise<any>;
}

/** How one tool is named, like a `[servers.S.tools]` entry of the proxy's mapping config. */
export interface McpToolMapping {
  /** Check the tool as this `verb:object` action instead of `mcp:<server>/<tool>`. */
  action?: string;
  /** The argument that holds the resource (absent: `*`). */
  resource?: string;
}

/** Which server this is and how its calls are named and answered. */
export interface GovernMcpOptions {
  /** The server's name in every action (`mcp:<server>/<tool>`); agent-name syntax. */
  server: string;
  /** The argument that holds the resource of every tool, instead of the default list. */
  resource?: string;
  /** Per-tool names. */
  tools?: Record<string, McpToolMapping>;
  /** Wait this long for a human when a call needs approval (default: no wait). */
  approvalWaitMs?: number;
  /**
   * What a tool call that is not made gives back. `result` (default): an `isError` tool result
   * whose text says why, as the MCP proxy answers, so a model reads it and goes on. `throw`: the
   * SDK's error (`PolicyDeniedError`, `ApprovalRequiredError`, `GatewayUnavailableError`, …).
   * `readResource` and `getPrompt` always throw, as the proxy answers them with an error.
   */
  onBlocked?: "result" | "throw";
}

const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const PLAIN_ACTION = /^[^:*?]+:[^*?]+$/;
const GOVERNED = Symbol.for("meshguard.governedMcpClient");

/** The `isError` tool result a model reads when MeshGuard stops a call. */
function refusal(text: string): { content: { type: "text"; text: string }[]; isError: true } {
  return { content: [{ type: "text", text }], isError: true };
}

function denialText(target: string, decision: PolicyDecision): string {
  const source: string[] = [];
  if (decision.policy) source.push(`policy ${decision.policy}`);
  if (decision.rule) source.push(`rule ${decision.rule}`);
  if (source.length === 0) source.push(`code ${decision.code ?? "unknown"}`);
  return `MeshGuard denied \`${target}\`: ${decision.reason ?? "denied"} (${source.join(", ")})`;
}

function approvalText(target: string, approvalId: string, reason: string): string {
  return (
    `MeshGuard: \`${target}\` needs a human's approval first (${reason}). Approval id: ${approvalId}. ` +
    `An operator approves it with \`meshguard approval approve ${approvalId}\`; then call it again.`
  );
}

function undecidedText(target: string, approvalId: string, waitedMs: number): string {
  return (
    `MeshGuard: \`${target}\` needs a human's approval and none came within ` +
    `${Math.floor(waitedMs / 1000)} s, so it was not called. Approval id: ${approvalId}. ` +
    `An operator approves it with \`meshguard approval approve ${approvalId}\`; then call it again.`
  );
}

function refusedText(target: string, approvalId: string, status: string): string {
  const what =
    status === "denied"
      ? "a human denied it"
      : status === "expired"
        ? "it expired before anyone decided"
        : "another call used it first";
  return (
    `MeshGuard: \`${target}\` was not called: its approval ${approvalId} did not let it through ` +
    `(${what}). \`meshguard approval list --status all\` shows it; a new call asks for a new ` +
    "approval, which an operator approves with `meshguard approval approve ID`."
  );
}

function failureText(target: string, error: unknown): string {
  const why = error instanceof Error ? error.message : String(error);
  return `MeshGuard could not check \`${target}\`, so it was not called: ${why}`;
}

/** One governed request: what is asked and how the answer is told. */
interface GovernedCall {
  action: string;
  resource: string;
  context: JsonObject;
  target: string;
}

function signalOf(rest: unknown[]): AbortSignal | undefined {
  for (const value of rest) {
    if (typeof value === "object" && value !== null && "signal" in value) {
      const signal = (value as McpRequestOptionsLike).signal;
      if (signal) return signal;
    }
  }
  return undefined;
}

/**
 * Governs `mcpClient` in place and returns it: its `callTool` (and `readResource`, `getPrompt`)
 * first asks the gateway, as `mcp:<server>/<tool>` with the call's arguments in
 * `context.arguments`, and reaches the server only on an allow; the outcome is recorded
 * afterwards (`error` for an `isError` result or a failed call). Every other method is untouched.
 */
export function governMcpClient<C extends McpClientLike>(
  meshguard: MeshGuardClient,
  mcpClient: C,
  options: GovernMcpOptions,
): C {
  const server = options.server;
  if (!NAME.test(server) || server.startsWith("agent_")) {
    throw new MeshGuardError(
      `MCP server name \`${server}\` must be 1 to 64 of a-z 0-9 . _ - (starting with a letter or digit)`,
    );
  }
  for (const [tool, mapping] of Object.entries(options.tools ?? {})) {
    if (mapping.action !== undefined && !PLAIN_ACTION.test(mapping.action)) {
      throw new MeshGuardError(
        `the action of MCP tool \`${tool}\` must be a plain verb:object, not \`${mapping.action}\``,
      );
    }
  }
  const marked = mcpClient as C & { [GOVERNED]?: boolean };
  if (marked[GOVERNED]) {
    throw new MeshGuardError("this MCP client is already governed");
  }
  const onBlocked = options.onBlocked ?? "result";
  const approvalWaitMs = options.approvalWaitMs ?? 0;

  const named = (target: string, args: JsonObject, mapping?: McpToolMapping): GovernedCall => ({
    action: mapping?.action ?? `mcp:${server}/${target}`,
    // The tool's argument, else the server's, else the first of the default list.
    resource: resourceFromArguments(args, mapping?.resource ?? options.resource),
    context: { server, tool: target, arguments: args },
    target,
  });

  /** Runs `send` only when allowed and records its outcome; `failed` reads an answer as an error. */
  const forward = async <R>(
    call: GovernedCall,
    decision: PolicyDecision,
    send: () => Promise<R>,
    failed: (answer: R) => boolean,
  ): Promise<R> => {
    const started = performance.now();
    const record = (status: string) =>
      meshguard.recordQuietly(call.action, {
        resource: call.resource,
        status,
        auditId: decision.auditId,
        durationMs: performance.now() - started,
        context: { server, tool: call.target },
      });
    let answer: R;
    try {
      answer = await send();
    } catch (error) {
      await record("error");
      throw error;
    }
    await record(failed(answer) ? "error" : "success");
    return answer;
  };

  const enforce = (call: GovernedCall, signal: AbortSignal | undefined) =>
    meshguard.enforce(call.action, {
      resource: call.resource,
      context: call.context,
      approvalWaitMs,
      signal,
    });

  /** The proxy's answers: the decision to forward on, or the text the model reads instead. */
  const decide = async (
    call: GovernedCall,
    signal: AbortSignal | undefined,
  ): Promise<PolicyDecision | string> => {
    const request = { resource: call.resource, context: call.context, signal };
    let decision: PolicyDecision;
    try {
      decision = await meshguard.check(call.action, request);
      if (!decision.allowed && decision.requiresApproval && decision.approvalId) {
        if (approvalWaitMs <= 0) {
          return approvalText(
            call.target,
            decision.approvalId,
            decision.reason ?? "approval required",
          );
        }
        const approval = await meshguard.waitForApproval(decision.approvalId, {
          timeoutMs: approvalWaitMs,
          signal,
        });
        if (approval.pending) {
          return undecidedText(call.target, decision.approvalId, approvalWaitMs);
        }
        if (!approval.approved) {
          return refusedText(call.target, decision.approvalId, approval.status);
        }
        decision = await meshguard.check(call.action, {
          ...request,
          approvalId: approval.approvalId,
        });
      }
    } catch (error) {
      return failureText(call.target, error);
    }
    if (decision.allowed) return decision;
    if (decision.requiresApproval && decision.approvalId) {
      return approvalText(call.target, decision.approvalId, decision.reason ?? "approval required");
    }
    return denialText(call.target, decision);
  };

  const callTool = mcpClient.callTool.bind(mcpClient);
  const governedCallTool = async (
    params: { name: string; arguments?: Record<string, unknown> },
    ...rest: unknown[]
  ) => {
    const args: JsonObject = { ...(params.arguments ?? {}) };
    const call = named(params.name, args, options.tools?.[params.name]);
    const signal = signalOf(rest);
    let decision: PolicyDecision;
    if (onBlocked === "throw") {
      decision = await enforce(call, signal);
    } else {
      const answer = await decide(call, signal);
      if (typeof answer === "string") return refusal(answer);
      decision = answer;
    }
    return forward(
      call,
      decision,
      () => callTool(params, ...rest),
      (result: unknown) =>
        typeof result === "object" &&
        result !== null &&
        (result as { isError?: unknown }).isError === true,
    );
  };
  Object.defineProperty(mcpClient, "callTool", {
    value: governedCallTool,
    configurable: true,
    writable: true,
  });

  if (typeof mcpClient.readResource === "function") {
    const readResource = mcpClient.readResource.bind(mcpClient);
    const governedReadResource = async (params: { uri: string }, ...rest: unknown[]) => {
      const target = "resources/read";
      const call: GovernedCall = {
        action: `mcp:${server}/${target}`,
        resource: params.uri || "*",
        context: { server, tool: target, arguments: { uri: params.uri } },
        target,
      };
      const decision = await enforce(call, signalOf(rest));
      return forward(
        call,
        decision,
        () => readResource(params, ...rest),
        () => false,
      );
    };
    Object.defineProperty(mcpClient, "readResource", {
      value: governedReadResource,
      configurable: true,
      writable: true,
    });
  }

  if (typeof mcpClient.getPrompt === "function") {
    const getPrompt = mcpClient.getPrompt.bind(mcpClient);
    const governedGetPrompt = async (
      params: { name: string; arguments?: Record<string, string> },
      ...rest: unknown[]
    ) => {
      const call = named(`prompts/${params.name}`, { ...(params.arguments ?? {}) });
      const decision = await enforce(call, signalOf(rest));
      return forward(
        call,
        decision,
        () => getPrompt(params, ...rest),
        () => false,
      );
    };
    Object.defineProperty(mcpClient, "getPrompt", {
      value: governedGetPrompt,
      configurable: true,
      writable: true,
    });
  }

  Object.defineProperty(mcpClient, GOVERNED, { value: true });
  return mcpClient;
}
