/**
 * MeshGuard TypeScript SDK: governance for AI agents.
 *
 * Ask the gateway before every action (`check`, `enforce`, `govern`, `governed`), record what
 * happened (`record`), and wait for a human when a policy asks for one (`waitForApproval`).
 * Only a 200 allow from the gateway lets an action run; every failure throws.
 */

export {
  DEFAULT_GATEWAY_URL,
  DEFAULT_TIMEOUT_MS,
  MAX_APPROVAL_POLL_SECONDS,
  MeshGuardClient,
  denialError,
  type AuditLogOptions,
  type CallOptions,
  type CheckOptions,
  type CreateAgentOptions,
  type EnforceOptions,
  type FetchFunction,
  type GovernOptions,
  type MeshGuardClientOptions,
  type MeshGuardLogger,
  type ProxyRequestOptions,
  type RecordOptions,
} from "./client.js";
export {
  ApprovalRequiredError,
  AuthenticationError,
  GatewayUnavailableError,
  MeshGuardError,
  PolicyDeniedError,
  RateLimitError,
  type DenialDetails,
} from "./errors.js";
export { defaultClient, governed, type GovernedOptions } from "./governed.js";
export {
  governedTool,
  governedTools,
  type GovernedToolOptions,
  type ToolCallOptionsLike,
  type ToolInput,
  type ToolLike,
} from "./ai.js";
export {
  governMcpClient,
  type GovernMcpOptions,
  type McpClientLike,
  type McpRequestOptionsLike,
  type McpToolMapping,
} from "./mcp.js";
export { DEFAULT_RESOURCE_ARGUMENTS, resourceFromArguments } from "./naming.js";
export type {
  Agent,
  Approval,
  CreatedAgent,
  DecisionKind,
  JsonObject,
  PolicyDecision,
} from "./types.js";
export { VERSION } from "./version.js";
