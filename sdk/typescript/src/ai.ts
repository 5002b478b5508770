/**
 * Governed tools for the Vercel AI SDK (`ai`): a tool's `execute` runs only after the gateway
 * allows the call. Written against the shape of a tool (an object with `execute`), not against
 * the `ai` package, so this SDK keeps no runtime dependency and works with any `ai` version whose
 * tools are such objects.
 */

import type { MeshGuardClient } from "./client.js";
import { MeshGuardError, PolicyDeniedError } from "./errors.js";
import { resourceFromArguments } from "./naming.js";
import type { JsonObject } from "./types.js";

/** What the AI SDK passes a tool's `execute` besides its input (the parts used here). */
export interface ToolCallOptionsLike {
  toolCallId?: string;
  abortSignal?: AbortSignal;
}

/** Anything shaped like an AI SDK tool: an object whose `execute` runs the call. */
export interface ToolLike {
  // `any` keeps every tool assignable whatever its input and options types are.
  execute?: (input: any, options: any) => unknown;
}

/** The input type of a tool's `execute`. */
export type ToolInput<T extends ToolLike> =
  Parameters<NonNullable<T["execute"]>> extends [infer I, ...any[]] ? I : unknown;

/** How a tool's calls are named and what happens when one is not allowed. */
export interface GovernedToolOptions<INPUT = unknown> {
  /** The action checked (default `tool:<name>`). */
  action?: string;
  /**
   * The resource: a fixed string or a function of the input. Default: the first string among
   * the input's `path`, `uri`, `url`, `file`, `filename`, else `*` (as the MCP proxy does).
   */
  resource?: string | ((input: INPUT) => string | null | undefined);
  /** The input field that holds the resource, instead of the default list. */
  resourceArgument?: string;
  /** More context for the check; `tool` and `arguments` (the input) are always set. */
  context?: JsonObject;
  /** Wait this long for a human when the call needs approval (default: no wait). */
  approvalWaitMs?: number;
  /**
   * Called instead of throwing when the gateway denies the call (not when it cannot be asked):
   * its value becomes the tool's output, so the model reads why. Default: the denial is thrown,
   * which the AI SDK reports to the model as a tool error.
   */
  onDeny?: (error: PolicyDeniedError, input: INPUT) => unknown;
}

function isAsyncGeneratorFunction(fn: unknown): boolean {
  return Object.prototype.toString.call(fn) === "[object AsyncGeneratorFunction]";
}

/**
 * `tool` with its `execute` checked first: the call is asked about as `tool:<name>` (or
 * `options.action`) with the input in `context.arguments`, so an approval is bound to these
 * exact arguments; `execute` runs only on an allow, and its outcome (`success` or `error`, with
 * its duration) is recorded. Any failure to ask the gateway throws: the tool never runs unchecked.
 */
export function governedTool<T extends ToolLike>(
  client: MeshGuardClient,
  name: string,
  tool: T,
  options: GovernedToolOptions<ToolInput<T>> = {},
): T {
  const execute = tool.execute;
  if (typeof execute !== "function") {
    throw new MeshGuardError(
      `tool \`${name}\` has no execute function to govern (it would run outside MeshGuard)`,
    );
  }
  const action = options.action ?? `tool:${name}`;

  const call = (input: ToolInput<T>, callOptions: ToolCallOptionsLike | undefined) => {
    const resource =
      typeof options.resource === "function"
        ? options.resource(input) || "*"
        : (options.resource ?? resourceFromArguments(input, options.resourceArgument));
    return {
      resource,
      context: { ...options.context, tool: name, arguments: input as unknown },
      approvalWaitMs: options.approvalWaitMs,
      signal: callOptions?.abortSignal,
    };
  };

  const denied = (error: unknown, input: ToolInput<T>): unknown => {
    if (options.onDeny && error instanceof PolicyDeniedError) return options.onDeny(error, input);
    throw error;
  };

  const check = async (input: ToolInput<T>, callOptions: ToolCallOptionsLike | undefined) => {
    const request = call(input, callOptions);
    const decision = await client.enforce(action, request);
    const started = performance.now();
    // What the MCP proxy records: status, duration and the tool, linked to the check; the
    // output itself stays out of the trail.
    return (status: string) =>
      client.recordQuietly(action, {
        resource: request.resource,
        status,
        auditId: decision.auditId,
        durationMs: performance.now() - started,
        context: { tool: name },
      });
  };

  let governedExecute: ToolLike["execute"];
  if (isAsyncGeneratorFunction(execute)) {
    // A streaming tool: checked before its first value, recorded after its last.
    governedExecute = async function* (input: ToolInput<T>, callOptions: ToolCallOptionsLike) {
      let record;
      try {
        record = await check(input, callOptions);
      } catch (error) {
        yield denied(error, input);
        return;
      }
      try {
        yield* execute.call(tool, input, callOptions) as AsyncIterable<unknown>;
      } catch (error) {
        await record("error");
        throw error;
      }
      await record("success");
    };
  } else {
    governedExecute = async (input: ToolInput<T>, callOptions: ToolCallOptionsLike) => {
      let record;
      try {
        record = await check(input, callOptions);
      } catch (error) {
        return denied(error, input);
      }
      let output: unknown;
      try {
        output = await execute.call(tool, input, callOptions);
      } catch (error) {
        await record("error");
        throw error;
      }
      await record("success");
      return output;
    };
  }
  return Object.assign(Object.create(Object.getPrototypeOf(tool) as object) as T, tool, {
    execute: governedExecute,
  });
}

/**
 * Every tool of an AI SDK `tools` object governed under its key (`tool:<key>`), with options
 * shared by all and, under `tools`, per tool.
 */
export function governedTools<TOOLS extends Record<string, ToolLike>>(
  client: MeshGuardClient,
  tools: TOOLS,
  options: Omit<GovernedToolOptions, "action" | "resource" | "resourceArgument"> & {
    tools?: { [K in keyof TOOLS]?: GovernedToolOptions<ToolInput<TOOLS[K]>> };
  } = {},
): TOOLS {
  const { tools: perTool, ...shared } = options;
  const governedSet: Record<string, ToolLike> = {};
  for (const name of Object.keys(tools)) {
    const tool: ToolLike = tools[name] as ToolLike;
    const own = (perTool?.[name as keyof TOOLS] ?? {}) as GovernedToolOptions;
    governedSet[name] = governedTool(client, name, tool, { ...shared, ...own });
  }
  return governedSet as TOOLS;
}
