/** The values the gateway answers with (decisions, agents, approvals), and how they are read. */

import { MeshGuardError } from "./errors.js";

/** A JSON object as the gateway sends it. */
export type JsonObject = Record<string, unknown>;

/** What the gateway decided: `allow`, `deny` or `require_approval` (kept open for new values). */
export type DecisionKind = "allow" | "deny" | "require_approval" | (string & {});

/**
 * A gateway decision with its reasons: the fields of the Python SDK's `PolicyDecision`, in
 * camelCase. `allowed` is true only for a 200 whose body says `"allowed": true`.
 */
export interface PolicyDecision {
  /** True only for a 200 allow: the one answer that lets an action run. */
  allowed: boolean;
  /** The action as the gateway echoed it (as sent, not normalised). */
  action: string;
  /** `allow`, `deny` or `require_approval`. */
  decision: DecisionKind;
  /** The policy that decided, or null (`no_policy`, `invalid_action`, …). */
  policy: string | null;
  /** The rule that decided, or null (a default, an approval, …). */
  rule: string | null;
  /** A human sentence saying why. */
  reason: string | null;
  /** The trace id the decision was audited under. */
  traceId: string | null;
  /** The machine code: `allowed`, `allowed_with_approval`, `denied_by_rule`, `default_deny`, `rate_limited`, … */
  code: string | null;
  /** The resource as the gateway echoed it. */
  resource: string | null;
  /** True when a human must decide first (`approval_required`, `approval_pending`). */
  requiresApproval: boolean;
  /** The approval to wait for or to use, for the approval codes. */
  approvalId: string | null;
  /** Seconds until a rate-limited (or budget-limited) check would fit. */
  retryAfterSeconds: number | null;
  /** False in the gateway's `audit` and `bypass` modes, where nothing is enforced. */
  enforced: boolean;
  /** The id of the check's audit event: pass it to `record` to link the outcome to it. */
  auditId: string | null;
}

/** An agent identity as the admin API lists it. */
export interface Agent {
  id: string;
  name: string;
  /** `unverified`, `verified`, `trusted` or `privileged`. */
  trustTier: string;
  tags: string[];
  orgId: string | null;
  /** `active` or `revoked`. */
  status: string | null;
  description: string | null;
  createdAt: string | null;
}

/** An agent as `createAgent` returns it: the stored fields plus its token, shown only once. */
export interface CreatedAgent extends JsonObject {
  id: string;
  name: string;
  token: string;
}

/** The state of one approval, as `GET /proxy/governance/approvals/{id}` reports it. */
export interface Approval {
  approvalId: string;
  /** `pending`, `approved`, `denied`, `expired` or `used`. */
  status: "pending" | "approved" | "denied" | "expired" | "used" | (string & {});
  /** Who decided (`admin`, an operator's name), once someone did. */
  decidedBy: string | null;
  /** The reason given with the decision, if any. */
  reason: string | null;
  /** True only when a human approved and the approval is still usable. */
  approved: boolean;
  /** True while no human has decided and the approval has not expired. */
  pending: boolean;
}

/** The value under `key` as a string, or null when absent or null. */
export function optString(body: JsonObject, key: string): string | null {
  const value = body[key];
  return value === undefined || value === null ? null : String(value);
}

/**
 * Reads a check's response body (SPEC section 2). `allowed` comes from the status, never from
 * the body alone; a missing field gets the value that does not widen what is allowed.
 */
export function decisionFromBody(
  body: JsonObject,
  allowed: boolean,
  action: string,
  traceId: string | null,
): PolicyDecision {
  const retry = body["retry_after_seconds"];
  const enforced = body["enforced"];
  return {
    allowed,
    action: optString(body, "action") || action,
    decision: optString(body, "decision") || (allowed ? "allow" : "deny"),
    policy: optString(body, "policy"),
    rule: optString(body, "rule"),
    reason: optString(body, "reason") || optString(body, "message"),
    traceId: optString(body, "trace_id") || traceId,
    code: optString(body, "code"),
    resource: optString(body, "resource"),
    requiresApproval: Boolean(body["requires_approval"]),
    approvalId: optString(body, "approval_id"),
    retryAfterSeconds: typeof retry === "number" && Number.isFinite(retry) ? retry : null,
    enforced: enforced === undefined ? true : Boolean(enforced),
    auditId: optString(body, "audit_id"),
  };
}

/** Reads one entry of `GET /admin/agents`; an entry without id or name is not an agent. */
export function agentFromBody(body: JsonObject): Agent {
  const id = optString(body, "id");
  const name = optString(body, "name");
  if (!id || !name) {
    throw new MeshGuardError("gateway answered an agent without `id` or `name`");
  }
  const tags = Array.isArray(body["tags"]) ? body["tags"].map((tag) => String(tag)) : [];
  return {
    id,
    name,
    trustTier: optString(body, "trustTier") ?? "",
    tags,
    orgId: optString(body, "orgId"),
    status: optString(body, "status"),
    description: optString(body, "description"),
    createdAt: optString(body, "createdAt"),
  };
}

/** Reads an approval body; an absent status is read as `pending`, never as approved. */
export function approvalFromBody(approvalId: string, body: JsonObject): Approval {
  const status = optString(body, "status") || "pending";
  return {
    approvalId: optString(body, "approval_id") || approvalId,
    status,
    decidedBy: optString(body, "decided_by"),
    reason: optString(body, "reason"),
    approved: status === "approved",
    pending: status === "pending",
  };
}
