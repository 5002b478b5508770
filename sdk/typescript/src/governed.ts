/** `governed`: put a function under MeshGuard without passing a client around. */

import { MeshGuardClient } from "./client.js";
import type { JsonObject } from "./types.js";

let sharedClient: MeshGuardClient | undefined;

/**
 * The client `governed` uses when none is given, configured from the environment. Created on
 * first use, not at import, so that importing a governed module never needs a token.
 */
export function defaultClient(): MeshGuardClient {
  sharedClient ??= new MeshGuardClient();
  return sharedClient;
}

/** How `governed` names each call. */
export interface GovernedOptions<A extends unknown[]> {
  /** The resource: a fixed string, or read from the call's arguments (default `*`). */
  resource?: string | ((...args: A) => string | null | undefined);
  /** Context sent with every check (and kept in its record). */
  context?: JsonObject;
  /** The client to use (default: `defaultClient()`). */
  client?: MeshGuardClient;
  /** Wait this long for a human when the action needs approval (default: no wait). */
  approvalWaitMs?: number;
  /** Send the return value (cut to 4 KiB) as the record's `result` (default true). */
  recordResult?: boolean;
}

/**
 * Wraps `fn` so that every call is checked as `action` first and recorded afterwards: a denied
 * call throws `PolicyDeniedError` and `fn` does not run.
 */
export function governed<A extends unknown[], R>(
  action: string,
  fn: (...args: A) => R | PromiseLike<R>,
  options: GovernedOptions<A> = {},
): (...args: A) => Promise<Awaited<R>> {
  return async (...args: A): Promise<Awaited<R>> => {
    const client = options.client ?? defaultClient();
    const resource =
      typeof options.resource === "function"
        ? (options.resource(...args) ?? undefined)
        : options.resource;
    return client.govern<R>(action, () => fn(...args), {
      resource,
      context: options.context,
      approvalWaitMs: options.approvalWaitMs,
      recordResult: options.recordResult,
    });
  };
}
