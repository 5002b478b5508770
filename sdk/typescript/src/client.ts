/**
 * The MeshGuard client: ask before acting, record what happened, wait for humans.
 *
 * Only a 200 answer whose body says `"allowed": true` is an allow. A 403 (and a 429 on a check)
 * is a decision, returned by `check` and thrown by `enforce`. Anything else (no answer, a
 * timeout, 401, 413, 5xx, a body that is not a decision) throws, so no failure reads as an allow.
 * Every request goes through one method (`transport`), the one place where a transport failure is
 * turned into an error.
 */

import {
  ApprovalRequiredError,
  AuthenticationError,
  GatewayUnavailableError,
  MeshGuardError,
  PolicyDeniedError,
  RateLimitError,
} from "./errors.js";
import {
  agentFromBody,
  approvalFromBody,
  decisionFromBody,
  optString,
  type Agent,
  type Approval,
  type CreatedAgent,
  type JsonObject,
  type PolicyDecision,
} from "./types.js";
import { VERSION } from "./version.js";

/** Where the gateway is when neither the options nor the environment say. */
export const DEFAULT_GATEWAY_URL = "http://localhost:3100";
/** How long one request may take unless `timeoutMs` says otherwise (the Python SDK's 30 s). */
export const DEFAULT_TIMEOUT_MS = 30_000;
/** The gateway holds an approval long-poll for at most this many seconds (SPEC section 2). */
export const MAX_APPROVAL_POLL_SECONDS = 60;
/** Results are stored cut to 4 KiB: sending more only risks the gateway's body limit. */
const MAX_RESULT_CHARS = 4096;
const USER_AGENT = `meshguard-typescript/${VERSION}`;

/** The `fetch` the client calls: the global one unless another is given. */
export type FetchFunction = (input: string, init: RequestInit) => Promise<Response>;

/** Where the client writes what it cannot throw (a record lost after the action ran). */
export interface MeshGuardLogger {
  warn(message: string): void;
}

/** How to reach the gateway; what is not given is read from the environment. */
export interface MeshGuardClientOptions {
  /** Gateway base URL. Env `MESHGUARD_URL`, else `MESHGUARD_GATEWAY_URL`, else `http://localhost:3100`. */
  gatewayUrl?: string;
  /** The agent's token for `/proxy` calls. Env `MESHGUARD_TOKEN`, else `MESHGUARD_AGENT_TOKEN`. */
  agentToken?: string;
  /** The admin token for admin calls. Env `MESHGUARD_ADMIN_TOKEN`. */
  adminToken?: string;
  /** Milliseconds one request may take before it fails (default 30 000). */
  timeoutMs?: number;
  /** Groups this client's calls in the audit trail. Env `MESHGUARD_TRACE_ID`, else a random UUID. */
  traceId?: string;
  /** A `fetch` to use instead of the global one (a proxy agent, a custom CA, a test double). */
  fetch?: FetchFunction;
  /** Where warnings go (default `console`). */
  logger?: MeshGuardLogger;
}

/** Options every agent call takes. */
export interface CallOptions {
  /** The trace id for this call only (default: the client's). */
  traceId?: string;
  /** Aborts the call; an aborted call throws a `MeshGuardError`, never allows. */
  signal?: AbortSignal;
}

/** What to ask the gateway about, besides the action. */
export interface CheckOptions extends CallOptions {
  /** What the action acts on (default `*`). */
  resource?: string;
  /** Facts for `sandbox` and `context` conditions; `arguments` binds an approval to them. */
  context?: JsonObject;
  /** An approved approval to use (single use). */
  approvalId?: string;
}

/** `check` options plus an optional wait for a human. */
export interface EnforceOptions extends CheckOptions {
  /**
   * When a human must decide, wait up to this many milliseconds for the decision and, when
   * approved, check again with the approval. Without it, `ApprovalRequiredError` is thrown.
   */
  approvalWaitMs?: number;
}

/** `enforce` options plus what to keep in the record. */
export interface GovernOptions extends EnforceOptions {
  /** Send the function's return value (cut to 4 KiB) as the record's `result` (default true). */
  recordResult?: boolean;
}

/** What a record says about an action that ran. */
export interface RecordOptions extends CallOptions {
  resource?: string;
  /** `success` (default), `error` or free text. */
  status?: string;
  /** What came of it; stored cut to 4 KiB. */
  result?: string;
  /** The check this record follows (`PolicyDecision.auditId`); it must be this agent's. */
  auditId?: string | null;
  durationMs?: number;
  context?: JsonObject;
}

/** Options of a request through the gateway's reverse proxy. */
export interface ProxyRequestOptions extends CallOptions {
  /** Claimed resource, sent as `X-MeshGuard-Resource`; it can only narrow what is allowed. */
  resource?: string;
  headers?: Record<string, string>;
  /** A raw body. */
  body?: RequestInit["body"];
  /** A JSON body (sets `Content-Type: application/json`). */
  json?: unknown;
  /** Query parameters. */
  query?: Record<string, string | number | boolean>;
}

/** Filters of `getAuditLog`. */
export interface AuditLogOptions {
  /** How many events at most (default 50); more than one page is read when needed. */
  limit?: number;
  decision?: string;
  agentId?: string;
  action?: string;
  traceId?: string;
  kind?: string;
}

/** What `createAgent` registers. */
export interface CreateAgentOptions {
  trustTier?: string;
  tags?: string[];
  description?: string;
  ttlSeconds?: number;
}

interface SendOptions {
  headers: Record<string, string>;
  json?: unknown;
  body?: RequestInit["body"];
  query?: Record<string, string | number | boolean | undefined>;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Return the response once its head arrived, without reading the body. */
  stream?: boolean;
}

/** A gateway answer with its body read. */
interface Answer {
  status: number;
  headers: Headers;
  text: string;
}

function env(...names: string[]): string | undefined {
  const vars = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process
    ?.env;
  for (const name of names) {
    const value = vars?.[name];
    if (value) return value;
  }
  return undefined;
}

function randomTraceId(): string {
  const crypto = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (crypto?.randomUUID) return crypto.randomUUID();
  return `mg-${Date.now().toString(16)}-${Math.random().toString(16).slice(2)}`;
}

function isPlainObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Why a fetch failed, in a few words (`ECONNREFUSED`, `getaddrinfo ENOTFOUND x`, …). */
function transportCause(error: unknown): string {
  if (error instanceof Error) {
    const cause = (error as { cause?: unknown }).cause;
    if (cause instanceof Error && cause.message) return `${error.message} (${cause.message})`;
    return error.message;
  }
  return String(error);
}

/** The gateway's `message` (or `reason`, `error`) for an error answer, else the raw text. */
function errorMessage(answer: Answer): string {
  let body: unknown;
  try {
    body = JSON.parse(answer.text);
  } catch {
    return answer.text.slice(0, 200) || `HTTP ${answer.status}`;
  }
  if (isPlainObject(body)) {
    for (const key of ["message", "reason", "error"]) {
      if (body[key]) return String(body[key]);
    }
  }
  return answer.text.slice(0, 200);
}

/** The body as a JSON object, or a `MeshGuardError` naming what came instead. */
function jsonObject(answer: Answer): JsonObject {
  let body: unknown;
  try {
    body = JSON.parse(answer.text);
  } catch (error) {
    throw new MeshGuardError(`gateway answered ${answer.status} with a body that is not JSON`, {
      cause: error,
    });
  }
  if (!isPlainObject(body)) {
    throw new MeshGuardError(`gateway answered ${answer.status} with JSON that is not an object`);
  }
  return body;
}

function retryAfter(answer: Answer): number | null {
  const value = answer.headers.get("Retry-After");
  if (value === null || value.trim() === "") return null;
  const seconds = Number(value);
  return Number.isFinite(seconds) ? seconds : null;
}

/** A function's return value as a record's `result`: text as is, anything else as JSON. */
function resultText(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  let text: string;
  if (typeof value === "string") {
    text = value;
  } else {
    try {
      text = JSON.stringify(value) ?? String(value);
    } catch {
      text = String(value);
    }
  }
  return text.slice(0, MAX_RESULT_CHARS);
}

function errorText(error: unknown): string {
  const text = error instanceof Error ? error.message || error.name : String(error);
  return text.slice(0, MAX_RESULT_CHARS);
}

/** The error that tells a caller why `decision` is not an allow. */
export function denialError(decision: PolicyDecision): PolicyDeniedError {
  const details = {
    policy: decision.policy,
    rule: decision.rule,
    reason: decision.reason,
    decision,
  };
  if (decision.requiresApproval || decision.decision === "require_approval") {
    return new ApprovalRequiredError(decision.action, details);
  }
  if (decision.code === "rate_limited") {
    return new RateLimitError(decision.action, {
      ...details,
      retryAfter: decision.retryAfterSeconds,
    });
  }
  return new PolicyDeniedError(decision.action, details);
}

/**
 * Client of the MeshGuard gateway, with the Python SDK's behaviour and errors.
 *
 * One client per agent: it holds the agent's token and a trace id that groups its calls in the
 * audit trail. Admin calls need the admin token instead.
 */
export class MeshGuardClient {
  /** The gateway's base URL, without a trailing `/`. */
  readonly gatewayUrl: string;
  /** The agent token sent on `/proxy` calls. */
  readonly agentToken: string | undefined;
  /** The admin token sent on `/admin` calls. */
  readonly adminToken: string | undefined;
  /** Milliseconds one request may take. */
  readonly timeoutMs: number;
  /** Where warnings go. */
  readonly logger: MeshGuardLogger;
  /** The trace id of the following calls; change it with `setTrace`. */
  traceId: string;
  /** Rows asked for per page of an admin listing (the gateway serves at most 1000). */
  protected pageSize = 1000;
  private readonly fetchImpl: FetchFunction;

  constructor(options: MeshGuardClientOptions = {}) {
    this.gatewayUrl = (
      options.gatewayUrl ||
      env("MESHGUARD_URL", "MESHGUARD_GATEWAY_URL") ||
      DEFAULT_GATEWAY_URL
    ).replace(/\/+$/, "");
    this.agentToken = options.agentToken || env("MESHGUARD_TOKEN", "MESHGUARD_AGENT_TOKEN");
    this.adminToken = options.adminToken || env("MESHGUARD_ADMIN_TOKEN");
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.traceId = options.traceId || env("MESHGUARD_TRACE_ID") || randomTraceId();
    this.logger = options.logger ?? console;
    const fetchImpl = options.fetch ?? (globalThis as { fetch?: FetchFunction }).fetch;
    if (!fetchImpl) {
      throw new MeshGuardError("no global fetch: use Node.js 20 or later, or pass `fetch`");
    }
    this.fetchImpl = fetchImpl;
  }

  /** Groups the following calls under `traceId` in the audit trail. */
  setTrace(traceId: string): void {
    this.traceId = traceId;
  }

  // --- decisions ---

  /**
   * Asks whether `action` on `resource` is allowed now.
   *
   * Returns the decision for a 200 (allowed) or a 403 (denied, or waiting for a human); throws
   * `AuthenticationError` (401), `GatewayUnavailableError` (unreachable, timeout, 502/503/504) or
   * `MeshGuardError` for any other answer.
   */
  async check(action: string, options: CheckOptions = {}): Promise<PolicyDecision> {
    const body: JsonObject = {
      action,
      resource: options.resource || "*",
      context: { ...(options.context ?? {}) },
    };
    if (options.approvalId) body["approval_id"] = options.approvalId;
    const traceId = options.traceId || this.traceId;
    const answer = await this.send("POST", "/proxy/governance/check", {
      headers: this.agentHeaders(traceId),
      json: body,
      signal: options.signal,
    });
    return this.decision(answer, action, traceId);
  }

  private decision(answer: Answer, action: string, traceId: string): PolicyDecision {
    const status = answer.status;
    if (status === 200) {
      const body = jsonObject(answer);
      // A 200 from something that is not a MeshGuard decision (a misrouted URL, a captive
      // portal) must not read as an allow.
      if (body["allowed"] !== true) {
        throw new MeshGuardError('gateway answered 200 without `"allowed": true`');
      }
      return decisionFromBody(body, true, action, traceId);
    }
    if (status === 403 || status === 429) {
      let body: JsonObject;
      try {
        body = jsonObject(answer);
      } catch {
        body = { reason: errorMessage(answer) };
      }
      if (status === 429 && !("code" in body)) body["code"] = "rate_limited";
      if (body["retry_after_seconds"] === undefined || body["retry_after_seconds"] === null) {
        body["retry_after_seconds"] = retryAfter(answer);
      }
      return decisionFromBody(body, false, action, traceId);
    }
    this.raiseForFailure(answer);
    throw new MeshGuardError(`gateway answered an unexpected status ${status}`);
  }

  /**
   * Returns the decision when allowed, else throws a `PolicyDeniedError` (`ApprovalRequiredError`
   * when a human must decide, `RateLimitError` when a limit is spent).
   *
   * With `approvalWaitMs`, an action that needs a human waits for the decision and, when
   * approved, is checked again with that approval.
   */
  async enforce(action: string, options: EnforceOptions = {}): Promise<PolicyDecision> {
    const { approvalWaitMs, ...checkOptions } = options;
    let decision = await this.check(action, checkOptions);
    if (
      !decision.allowed &&
      decision.requiresApproval &&
      decision.approvalId &&
      approvalWaitMs &&
      approvalWaitMs > 0
    ) {
      const approval = await this.waitForApproval(decision.approvalId, {
        timeoutMs: approvalWaitMs,
        signal: options.signal,
        traceId: options.traceId,
      });
      if (approval.approved) {
        decision = await this.check(action, { ...checkOptions, approvalId: approval.approvalId });
      }
    }
    if (decision.allowed) return decision;
    throw denialError(decision);
  }

  /**
   * Runs `fn` only when `action` is allowed, then records its outcome (`success`, or `error`
   * with the error's message) with its duration, linked to the check by its audit id. The error
   * of `fn` is rethrown; a record that fails is logged, never thrown over `fn`'s own outcome.
   */
  async govern<T>(
    action: string,
    fn: (decision: PolicyDecision) => T | PromiseLike<T>,
    options: GovernOptions = {},
  ): Promise<Awaited<T>> {
    const { recordResult = true, ...enforceOptions } = options;
    const decision = await this.enforce(action, enforceOptions);
    const started = performance.now();
    const record = (status: string, result: string | undefined) =>
      this.recordQuietly(action, {
        resource: options.resource,
        status,
        result,
        auditId: decision.auditId,
        durationMs: performance.now() - started,
        context: options.context,
        traceId: options.traceId,
      });
    let value: Awaited<T>;
    try {
      value = await fn(decision);
    } catch (error) {
      await record("error", errorText(error));
      throw error;
    }
    await record("success", recordResult ? resultText(value) : undefined);
    return value;
  }

  /**
   * `record`, with a failure logged instead of thrown: the action already ran.
   * @internal
   */
  async recordQuietly(action: string, options: RecordOptions): Promise<string | null> {
    try {
      return await this.record(action, options);
    } catch (error) {
      this.logger.warn(`MeshGuard could not record ${action}: ${errorText(error)}`);
      return null;
    }
  }

  /**
   * Records the outcome of an action in the audit trail; returns the event's audit id.
   *
   * `auditId` links the record to the check it follows. Past the agent's record budget the
   * gateway answers 429, thrown as `RateLimitError` with `retryAfter`.
   */
  async record(action: string, options: RecordOptions = {}): Promise<string | null> {
    const body: JsonObject = {
      action,
      resource: options.resource || "*",
      status: options.status ?? "success",
    };
    if (options.result !== undefined) body["result"] = options.result;
    if (options.auditId !== undefined && options.auditId !== null) {
      body["audit_id"] = options.auditId;
    }
    if (options.durationMs !== undefined) body["duration_ms"] = Math.trunc(options.durationMs);
    if (options.context && Object.keys(options.context).length > 0) {
      body["context"] = { ...options.context };
    }
    const answer = await this.send("POST", "/proxy/governance/record", {
      headers: this.agentHeaders(options.traceId || this.traceId),
      json: body,
      signal: options.signal,
    });
    if (answer.status === 429) {
      throw new RateLimitError(action, {
        reason: errorMessage(answer),
        retryAfter: retryAfter(answer),
      });
    }
    if (answer.status !== 200 && answer.status !== 201) {
      this.raiseForFailure(answer);
      throw new MeshGuardError(`record answered an unexpected status ${answer.status}`);
    }
    const recorded = answer.text ? jsonObject(answer) : {};
    return optString(recorded, "audit_id");
  }

  // --- approvals ---

  /**
   * The state of one of this agent's approvals. With `waitMs`, the gateway holds the answer
   * until a human decides or the wait (at most 60 s per request) is over.
   */
  async getApproval(
    approvalId: string,
    options: CallOptions & { waitMs?: number } = {},
  ): Promise<Approval> {
    const waitSeconds = Math.max(
      0,
      Math.min(MAX_APPROVAL_POLL_SECONDS, Math.ceil((options.waitMs ?? 0) / 1000)),
    );
    const answer = await this.send(
      "GET",
      `/proxy/governance/approvals/${encodeURIComponent(approvalId)}`,
      {
        headers: this.agentHeaders(options.traceId || this.traceId),
        query: waitSeconds ? { wait: waitSeconds } : undefined,
        timeoutMs: this.timeoutMs + waitSeconds * 1000,
        signal: options.signal,
      },
    );
    if (answer.status === 404) {
      throw new MeshGuardError(`approval \`${approvalId}\` is unknown to this agent`);
    }
    if (answer.status !== 200) {
      this.raiseForFailure(answer);
      throw new MeshGuardError(`approval answered an unexpected status ${answer.status}`);
    }
    return approvalFromBody(approvalId, jsonObject(answer));
  }

  /**
   * Waits up to `timeoutMs` (default 300 000) for a human to decide, long-polling in steps of
   * at most 60 s, and returns the last known state: `pending` when nobody decided in time, so
   * look at `approved` before acting.
   */
  async waitForApproval(
    approvalId: string,
    options: CallOptions & { timeoutMs?: number } = {},
  ): Promise<Approval> {
    const deadline = performance.now() + (options.timeoutMs ?? 300_000);
    const call = { traceId: options.traceId, signal: options.signal };
    let approval = await this.getApproval(approvalId, call);
    while (approval.pending) {
      const remaining = deadline - performance.now();
      if (remaining <= 0) break;
      approval = await this.getApproval(approvalId, { ...call, waitMs: remaining });
    }
    return approval;
  }

  // --- proxy ---

  /**
   * Sends a request through the gateway's reverse proxy (`/proxy/<path>`) and returns the
   * upstream's response. The gateway decides on the real call (`<verb>:<path>`); `action` is sent
   * as `X-MeshGuard-Action`, a claim that can only narrow: both must be allowed. A denial throws
   * (`PolicyDeniedError`, `RateLimitError`) before anything reaches the upstream.
   */
  async request(
    method: string,
    path: string,
    action: string,
    options: ProxyRequestOptions = {},
  ): Promise<Response> {
    const traceId = options.traceId || this.traceId;
    const headers: Record<string, string> = {
      ...(options.headers ?? {}),
      ...this.agentHeaders(traceId),
      "X-MeshGuard-Action": action,
    };
    if (options.resource) headers["X-MeshGuard-Resource"] = options.resource;
    const response = await this.sendStreaming(method, `/proxy/${path.replace(/^\/+/, "")}`, {
      headers,
      json: options.json,
      body: options.body,
      query: options.query,
      signal: options.signal,
    });
    if (response.status < 400) return response;
    const answer = await this.readAnswer(response);
    if (answer.status === 403 || answer.status === 429) {
      throw denialError(this.decision(answer, action, traceId));
    }
    this.raiseForFailure(answer);
    throw new MeshGuardError(`proxy answered an unexpected status ${answer.status}`);
  }

  /** GET through the proxy. */
  get(path: string, action: string, options?: ProxyRequestOptions): Promise<Response> {
    return this.request("GET", path, action, options);
  }

  /** POST through the proxy. */
  post(path: string, action: string, options?: ProxyRequestOptions): Promise<Response> {
    return this.request("POST", path, action, options);
  }

  /** PUT through the proxy. */
  put(path: string, action: string, options?: ProxyRequestOptions): Promise<Response> {
    return this.request("PUT", path, action, options);
  }

  /** DELETE through the proxy. */
  delete(path: string, action: string, options?: ProxyRequestOptions): Promise<Response> {
    return this.request("DELETE", path, action, options);
  }

  // --- health ---

  /** The gateway's health report (`status` is `healthy` when it can decide). */
  async health(): Promise<JsonObject> {
    return jsonObject(await this.send("GET", "/health", { headers: {} }));
  }

  /** True only when the gateway answers and reports itself healthy. */
  async isHealthy(): Promise<boolean> {
    try {
      return (await this.health())["status"] === "healthy";
    } catch (error) {
      if (error instanceof MeshGuardError) return false;
      throw error;
    }
  }

  // --- admin: agents ---

  /** Every registered agent, revoked ones included (every page). */
  async listAgents(): Promise<Agent[]> {
    return (await this.listing("/agents", "agents")).map(agentFromBody);
  }

  /** Registers an agent; the answer holds its `token`, shown only this once. */
  async createAgent(name: string, options: CreateAgentOptions = {}): Promise<CreatedAgent> {
    const payload: JsonObject = {
      name,
      trustTier: options.trustTier ?? "verified",
      tags: options.tags ?? [],
    };
    if (options.description !== undefined) payload["description"] = options.description;
    if (options.ttlSeconds !== undefined) payload["ttlSeconds"] = options.ttlSeconds;
    const created = await this.admin("POST", "/agents", { json: payload });
    if (typeof created["token"] !== "string" || typeof created["id"] !== "string") {
      throw new MeshGuardError("gateway answered a created agent without `id` or `token`");
    }
    return created as CreatedAgent;
  }

  /** One agent by id or name. */
  async getAgent(agent: string): Promise<Agent> {
    return agentFromBody(await this.admin("GET", `/agents/${encodeURIComponent(agent)}`));
  }

  /** Revokes an agent: its next request is refused with 401 (kept for `restoreAgent`). */
  async revokeAgent(agent: string): Promise<void> {
    await this.admin("DELETE", `/agents/${encodeURIComponent(agent)}`);
  }

  /** Lifts a revocation; the agent's unrevoked tokens work again. */
  async restoreAgent(agent: string): Promise<JsonObject> {
    return this.admin("POST", `/agents/${encodeURIComponent(agent)}/restore`);
  }

  /** A new token for `agent`; `rotate` revokes every older one. */
  async issueToken(agent: string, options: { rotate?: boolean } = {}): Promise<string> {
    const body = await this.admin("POST", `/agents/${encodeURIComponent(agent)}/token`, {
      query: options.rotate ? { rotate: "true" } : undefined,
    });
    if (typeof body["token"] !== "string") {
      throw new MeshGuardError("gateway answered a token request without `token`");
    }
    return body["token"];
  }

  // --- admin: policies ---

  /** Every policy in force, ordered by name (every page). */
  async listPolicies(): Promise<JsonObject[]> {
    return this.listing("/policies", "policies");
  }

  /** One policy by name. */
  async getPolicy(name: string): Promise<JsonObject> {
    return this.admin("GET", `/policies/${encodeURIComponent(name)}`);
  }

  /** Creates or replaces the policy named in `document` (YAML or JSON text). */
  async applyPolicy(document: string): Promise<JsonObject> {
    return this.admin("POST", "/policies", { body: document, contentType: "application/yaml" });
  }

  /** Removes a policy applied through the API. */
  async deletePolicy(name: string): Promise<void> {
    await this.admin("DELETE", `/policies/${encodeURIComponent(name)}`);
  }

  // --- admin: audit ---

  /**
   * Up to `limit` (default 50) audit events, newest first, filtered as asked; a limit above
   * the gateway's page size is read over several pages.
   */
  async getAuditLog(options: AuditLogOptions = {}): Promise<JsonObject[]> {
    const query: Record<string, string> = {};
    const filters: [string, string | undefined][] = [
      ["decision", options.decision],
      ["agentId", options.agentId],
      ["action", options.action],
      ["traceId", options.traceId],
      ["kind", options.kind],
    ];
    for (const [key, value] of filters) {
      if (value !== undefined) query[key] = value;
    }
    return this.listing("/audit", "entries", query, options.limit ?? 50);
  }

  // --- admin: approvals ---

  /** Approvals, e.g. `{ status: "pending" }` for those waiting on a human (every page). */
  async listApprovals(options: { status?: string } = {}): Promise<JsonObject[]> {
    return this.listing(
      "/approvals",
      "approvals",
      options.status ? { status: options.status } : {},
    );
  }

  /** Approves a pending approval (single use by the agent that asked). */
  async approve(approvalId: string): Promise<JsonObject> {
    return this.admin("POST", `/approvals/${encodeURIComponent(approvalId)}/approve`);
  }

  /** Denies a pending approval; the agent's retries are denied until it times out. */
  async denyApproval(approvalId: string, reason?: string): Promise<JsonObject> {
    return this.admin("POST", `/approvals/${encodeURIComponent(approvalId)}/deny`, {
      json: reason ? { reason } : {},
    });
  }

  // --- transport ---

  private agentHeaders(traceId: string): Record<string, string> {
    const headers: Record<string, string> = { "X-MeshGuard-Trace-ID": traceId };
    if (this.agentToken) headers["Authorization"] = `Bearer ${this.agentToken}`;
    return headers;
  }

  private async admin(
    method: string,
    path: string,
    options: {
      json?: unknown;
      body?: string;
      contentType?: string;
      query?: Record<string, string | number | boolean | undefined>;
    } = {},
  ): Promise<JsonObject> {
    if (!this.adminToken) {
      throw new AuthenticationError("Admin token required for this operation");
    }
    const headers: Record<string, string> = {
      "X-Admin-Token": this.adminToken,
      "X-MeshGuard-Trace-ID": this.traceId,
    };
    if (options.contentType) headers["Content-Type"] = options.contentType;
    const answer = await this.send(method, `/admin${path}`, {
      headers,
      json: options.json,
      body: options.body,
      query: options.query,
    });
    this.raiseForFailure(answer);
    return answer.text ? jsonObject(answer) : {};
  }

  /**
   * The rows under `key` of a paged listing, following `nextCursor` to its end (or until `cap`
   * rows), so that nothing is cut off at one page.
   */
  private async listing(
    path: string,
    key: string,
    filters: Record<string, string> = {},
    cap?: number,
  ): Promise<JsonObject[]> {
    const query: Record<string, string | number> = { ...filters };
    const rows: JsonObject[] = [];
    for (;;) {
      const size = cap === undefined ? this.pageSize : Math.min(this.pageSize, cap - rows.length);
      if (size <= 0) return rows;
      query["limit"] = size;
      const body = await this.admin("GET", path, { query });
      const page = body[key];
      if (page !== undefined && page !== null && !Array.isArray(page)) {
        throw new MeshGuardError(`gateway answered \`${key}\` that is not a list`);
      }
      for (const row of page ?? []) {
        if (!isPlainObject(row)) {
          throw new MeshGuardError(`gateway answered a row of \`${key}\` that is not an object`);
        }
        rows.push(row);
      }
      const cursor = body["nextCursor"];
      if (typeof cursor !== "string" || !cursor || cursor === query["cursor"]) return rows;
      query["cursor"] = cursor;
    }
  }

  /** Raises for the answers that are never usable: 401, 5xx and other 4xx. */
  private raiseForFailure(answer: Answer): void {
    const status = answer.status;
    if (status === 401) {
      throw new AuthenticationError(errorMessage(answer) || "Invalid or expired token");
    }
    if (status === 502 || status === 503 || status === 504) {
      throw new GatewayUnavailableError(
        `MeshGuard gateway cannot decide (${status}): ${errorMessage(answer)}`,
      );
    }
    if (status >= 400) {
      throw new MeshGuardError(`Request failed: ${status} ${errorMessage(answer)}`);
    }
  }

  /** Sends one request and reads its whole body within the timeout. */
  private async send(method: string, path: string, options: SendOptions): Promise<Answer> {
    return this.transport(method, path, options, async (response) => ({
      status: response.status,
      headers: response.headers,
      text: await response.text(),
    }));
  }

  /** Sends one request and returns the response once its head arrived. */
  private async sendStreaming(
    method: string,
    path: string,
    options: SendOptions,
  ): Promise<Response> {
    return this.transport(method, path, { ...options, stream: true }, async (response) => response);
  }

  private async readAnswer(response: Response): Promise<Answer> {
    try {
      return { status: response.status, headers: response.headers, text: await response.text() };
    } catch (error) {
      throw new GatewayUnavailableError(
        `MeshGuard gateway at ${this.gatewayUrl} broke off its answer: ${transportCause(error)}`,
        { cause: error },
      );
    }
  }

  /**
   * The one place a request is made: a timeout, a refused connection, a broken answer and an
   * abort all become errors here, never a value a caller could read as an allow.
   */
  private async transport<R>(
    method: string,
    path: string,
    options: SendOptions,
    read: (response: Response) => Promise<R>,
  ): Promise<R> {
    const headers: Record<string, string> = { "User-Agent": USER_AGENT, ...options.headers };
    let body = options.body;
    if (options.json !== undefined) {
      try {
        body = JSON.stringify(options.json);
      } catch (error) {
        throw new MeshGuardError(`the request body is not JSON: ${errorText(error)}`, {
          cause: error,
        });
      }
      headers["Content-Type"] = "application/json";
    }
    let url = `${this.gatewayUrl}${path}`;
    if (options.query) {
      const params = new URLSearchParams();
      for (const [key, value] of Object.entries(options.query)) {
        if (value !== undefined) params.set(key, String(value));
      }
      const text = params.toString();
      if (text) url += `?${text}`;
    }
    const external = options.signal;
    if (external?.aborted) {
      throw new MeshGuardError("the call to the MeshGuard gateway was aborted", {
        cause: external.reason,
      });
    }
    const controller = new AbortController();
    let timedOut = false;
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
    const onAbort = (): void => controller.abort();
    external?.addEventListener("abort", onAbort, { once: true });
    try {
      const response = await this.fetchImpl(url, {
        method,
        headers,
        body,
        // A redirect is not a decision: it is reported as the status it is, never followed.
        redirect: "manual",
        signal: controller.signal,
      });
      if (options.stream) clearTimeout(timer);
      return await read(response);
    } catch (error) {
      if (error instanceof MeshGuardError) throw error;
      if (timedOut) {
        throw new GatewayUnavailableError(
          `MeshGuard gateway at ${this.gatewayUrl} did not answer within the timeout (${timeoutMs} ms)`,
          { cause: error },
        );
      }
      if (external?.aborted) {
        throw new MeshGuardError("the call to the MeshGuard gateway was aborted", {
          cause: external.reason,
        });
      }
      throw new GatewayUnavailableError(
        `MeshGuard gateway at ${this.gatewayUrl} is unreachable: ${transportCause(error)}`,
        { cause: error },
      );
    } finally {
      clearTimeout(timer);
      external?.removeEventListener("abort", onAbort);
    }
  }
}
