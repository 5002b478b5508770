/**
 * How a tool call is named for the gateway, the same way `meshguard mcp run` names it (SPEC
 * section 10), so that one policy governs a tool whichever way an agent reaches it.
 */

import type { JsonObject } from "./types.js";

/** The arguments read, in this order, for a call's resource when no argument is named. */
export const DEFAULT_RESOURCE_ARGUMENTS = ["path", "uri", "url", "file", "filename"] as const;

/**
 * The resource of a call: the string value of the argument `named`, else of the first of
 * `path`, `uri`, `url`, `file`, `filename` that holds a string; `*` when there is none or it is
 * empty.
 */
export function resourceFromArguments(args: unknown, named?: string): string {
  if (typeof args !== "object" || args === null || Array.isArray(args)) return "*";
  const values = args as JsonObject;
  let value: unknown;
  if (named !== undefined) {
    value = values[named];
  } else {
    const key = DEFAULT_RESOURCE_ARGUMENTS.find((name) => typeof values[name] === "string");
    value = key === undefined ? undefined : values[key];
  }
  return typeof value === "string" && value !== "" ? value : "*";
}
