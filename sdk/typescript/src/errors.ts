/**
 * Errors thrown by the MeshGuard SDK.
 *
 * The hierarchy and names are those of the Python SDK (`meshguard`), so that both read the same:
 * `PolicyDeniedError` catches every denial (rule, rate limit, pending approval) and
 * `MeshGuardError` catches everything. No error ever means that an action is allowed.
 */

import type { PolicyDecision } from "./types.js";

/** Base of every SDK error: whatever went wrong, the action must not run. */
export class MeshGuardError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "MeshGuardError";
  }
}

/**
 * The gateway refused the credentials (401): token missing, malformed or expired, or the agent
 * revoked. Also thrown before sending when an admin call has no admin token.
 */
export class AuthenticationError extends MeshGuardError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AuthenticationError";
  }
}

/**
 * The gateway could not be reached, did not answer in time, or said it cannot decide (502, 503,
 * 504). Thrown instead of returning a decision so that an outage is never mistaken for an allow.
 */
export class GatewayUnavailableError extends MeshGuardError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "GatewayUnavailableError";
  }
}

/** What a denial error is built from; `decision` is the gateway's full answer when known. */
export interface DenialDetails {
  policy?: string | null;
  rule?: string | null;
  reason?: string | null;
  decision?: PolicyDecision | null;
}

/**
 * The gateway denied the action. `decision` holds its whole answer (code, policy, rule, reason,
 * audit id) so a caller can tell the agent, or a human, exactly why.
 */
export class PolicyDeniedError extends MeshGuardError {
  /** The action that was denied. */
  readonly action: string;
  /** The policy that decided, when the gateway named one. */
  readonly policy: string | null;
  /** The rule that decided, when the gateway named one. */
  readonly rule: string | null;
  /** The gateway's human-readable reason. */
  readonly reason: string;
  /** The gateway's full answer, when there was one. */
  readonly decision: PolicyDecision | null;

  constructor(
    action: string,
    details: DenialDetails = {},
    defaultReason = "Access denied by policy",
  ) {
    const policy = details.policy ?? null;
    const rule = details.rule ?? null;
    const reason = details.reason || defaultReason;
    let message = `Action '${action}' denied`;
    if (policy) message += ` by policy '${policy}'`;
    if (rule) message += ` (rule: ${rule})`;
    message += `: ${reason}`;
    super(message);
    this.name = "PolicyDeniedError";
    this.action = action;
    this.policy = policy;
    this.rule = rule;
    this.reason = reason;
    this.decision = details.decision ?? null;
  }

  /** The gateway's machine code (`denied_by_rule`, `rate_limited`, …), when known. */
  get code(): string | null {
    return this.decision?.code ?? null;
  }
}

/**
 * A human must approve the action first. `approvalId` names the pending approval: wait for it
 * with `MeshGuardClient.waitForApproval`, or show it to the person who decides.
 */
export class ApprovalRequiredError extends PolicyDeniedError {
  constructor(action: string, details: DenialDetails = {}) {
    super(action, details);
    this.name = "ApprovalRequiredError";
  }

  /** The approval to wait for, or to show to a human. */
  get approvalId(): string | null {
    return this.decision?.approvalId ?? null;
  }
}

/**
 * A rate limit is exhausted (a policy's limit on checks, or the agent's record budget). It is a
 * denial like any other; `retryAfter` says in how many seconds one more request would fit.
 */
export class RateLimitError extends PolicyDeniedError {
  /** Seconds until a retry can succeed, when the gateway said. */
  readonly retryAfter: number | null;

  constructor(action = "unknown", details: DenialDetails & { retryAfter?: number | null } = {}) {
    super(action, details, "Rate limit exceeded");
    this.name = "RateLimitError";
    this.retryAfter = details.retryAfter ?? null;
  }
}
