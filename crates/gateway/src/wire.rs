//! Every machine code the HTTP API answers, as one closed enum: the `code` of a decision body
//! and the `error` of an error body (SPEC 2) are both spelled here and nowhere else, and the
//! metric labels use the same spellings.

use meshguard_policy::Code;

/// A code the API can answer. A new code is a new variant, so a `match` over answers names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireCode {
    /// A decision's code (`allowed`, `denied_by_rule`, `rate_limited`, …).
    Decided(Code),
    /// 401: the request carries no token MeshGuard honours.
    Unauthorized,
    /// 503: the store or Redis cannot be reached; nothing is allowed.
    Unavailable,
    /// 400: the body or a parameter is malformed.
    BadRequest,
    /// 413: the body is over the limit.
    PayloadTooLarge,
    /// 403 (not a decision): the request touches what belongs to another agent.
    Forbidden,
    /// 408: the body did not arrive in time.
    RequestTimeout,
    /// 404: no such agent, policy, approval, event or route.
    NotFound,
    /// 405: a method the endpoint never serves.
    MethodNotAllowed,
    /// 409: the change conflicts with existing state.
    Conflict,
    /// 422: a policy that does not validate.
    InvalidPolicy,
    /// 502: an allowed request could not be forwarded.
    BadGateway,
    /// 500: a bug or a broken invariant.
    Internal,
}

impl WireCode {
    /// Every code that is not a decision's: what the `error` of an error body can say (besides
    /// `rate_limited`).
    pub const ERRORS: [WireCode; 12] = [
        WireCode::Unauthorized,
        WireCode::Unavailable,
        WireCode::BadRequest,
        WireCode::PayloadTooLarge,
        WireCode::Forbidden,
        WireCode::RequestTimeout,
        WireCode::NotFound,
        WireCode::MethodNotAllowed,
        WireCode::Conflict,
        WireCode::InvalidPolicy,
        WireCode::BadGateway,
        WireCode::Internal,
    ];

    /// The spelling on the wire, in logs and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            WireCode::Decided(code) => code.as_str(),
            WireCode::Unauthorized => "unauthorized",
            WireCode::Unavailable => "unavailable",
            WireCode::BadRequest => "bad_request",
            WireCode::PayloadTooLarge => "payload_too_large",
            WireCode::Forbidden => "forbidden",
            WireCode::RequestTimeout => "request_timeout",
            WireCode::NotFound => "not_found",
            WireCode::MethodNotAllowed => "method_not_allowed",
            WireCode::Conflict => "conflict",
            WireCode::InvalidPolicy => "invalid_policy",
            WireCode::BadGateway => "bad_gateway",
            WireCode::Internal => "internal",
        }
    }
}

impl From<Code> for WireCode {
    fn from(code: Code) -> Self {
        WireCode::Decided(code)
    }
}

impl serde::Serialize for WireCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl utoipa::PartialSchema for WireCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let codes = Code::ALL
            .into_iter()
            .map(WireCode::Decided)
            .chain(WireCode::ERRORS)
            .map(WireCode::as_str);
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A machine code: a decision's `code`, or the `error` of an error body.",
            ))
            .enum_values(Some(codes))
            .into()
    }
}

impl utoipa::ToSchema for WireCode {}

impl std::fmt::Display for WireCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_codes_share_a_spelling() {
        let mut spellings: Vec<&str> = Code::ALL
            .into_iter()
            .map(WireCode::Decided)
            .chain(WireCode::ERRORS)
            .map(WireCode::as_str)
            .collect();
        let all = spellings.len();
        spellings.sort_unstable();
        spellings.dedup();
        assert_eq!(spellings.len(), all);
    }
}
