//! MeshGuard gateway: the HTTP service that decides, limits, audits and proxies agent actions.
