/** The CommonJS half of the package: `require("@meshguard/sdk")` gets the same API. */

import assert = require("node:assert/strict");
import test = require("node:test");

import sdk = require("@meshguard/sdk");

test("require resolves to the CommonJS build with the whole API", () => {
  assert.match(require.resolve("@meshguard/sdk"), /dist[\\/]cjs[\\/]index\.js$/);
  for (const name of [
    "MeshGuardClient",
    "MeshGuardError",
    "AuthenticationError",
    "GatewayUnavailableError",
    "PolicyDeniedError",
    "ApprovalRequiredError",
    "RateLimitError",
    "denialError",
    "governed",
    "governedTool",
    "governedTools",
    "governMcpClient",
  ]) {
    assert.equal(typeof (sdk as Record<string, unknown>)[name], "function", name);
  }
  const error = new sdk.RateLimitError("browse:web", { retryAfter: 3 });
  assert.ok(error instanceof sdk.PolicyDeniedError);
  assert.ok(error instanceof sdk.MeshGuardError);
  assert.equal(error.retryAfter, 3);
});

test("a CommonJS client fails closed too", async () => {
  const client = new sdk.MeshGuardClient({ gatewayUrl: "http://127.0.0.1:1", agentToken: "t" });
  await assert.rejects(client.check("read:workspace"), sdk.GatewayUnavailableError);
});
