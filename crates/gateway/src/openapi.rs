//! The OpenAPI 3.1 document of the HTTP API, derived from the router and the handlers' own types
//! so it cannot drift from them: every documented route is registered through
//! [`utoipa_axum::routes!`] from its handler's `#[utoipa::path]`, and every body is the type the
//! handler answers with. Served at `GET /openapi.json` and printed by `meshguard openapi`; the
//! copy in `docs/openapi.json` is checked against it by the tests.
//!
//! What each group of routes shares is added here once, from the group it belongs to
//! ([`Group::describe`]): the guard's security scheme and refusals, and on agent routes the trace
//! id headers. Left out: the console's HTML pages and the MCP endpoints (`/mcp/{server}`,
//! JSON-RPC over streamable HTTP, see docs/integrations/mcp.md).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn, PathItem, Paths};
use utoipa::openapi::schema::{OneOfBuilder, Schema};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{Content, HeaderBuilder, OpenApi, Ref, RefOr, ResponseBuilder, Responses};
use utoipa::{IntoResponses, PartialSchema, ToSchema};

use crate::error::{ErrorBody, InvalidPolicyBody, RateLimitedBody};
use crate::routes::CheckAnswer;
use crate::wire::WireCode;

/// The security scheme of agent endpoints: the agent's token.
pub const AGENT_TOKEN: &str = "agentToken";
/// The security scheme of the admin API: the admin token in `X-Admin-Token`.
pub const ADMIN_TOKEN: &str = "adminToken";
/// The admin token sent as `Authorization: Bearer` (accepted on `/admin` only).
pub const ADMIN_BEARER: &str = "adminBearer";

/// The document's fixed parts; the paths come from the router ([`document`]).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "MeshGuard",
        description = "The governance gateway for AI agents: agents ask before they act \
            (`/proxy/governance/check`), operators manage agents, policies, approvals and the \
            audit trail under `/admin`. Only a 200 means allow. The contract is docs/SPEC.md; \
            the guide is docs/api.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    tags(
        (name = "agent", description = "Agent endpoints, with the agent's token \
            (`Authorization: Bearer <jwt>`). Every answer carries the request's trace id in \
            `X-Trace-ID` and `X-MeshGuard-Trace-ID`."),
        (name = "admin", description = "The admin API, with the admin token (`X-Admin-Token`, \
            or `Authorization: Bearer` on `/admin`)."),
        (name = "public", description = "Unauthenticated: for load balancers, Prometheus and \
            API tooling.")
    ),
    components(schemas(ErrorBody, InvalidPolicyBody, RateLimitedBody, WireCode)),
    modifiers(&SecuritySchemes)
)]
pub struct ApiDoc;

/// Adds the two tokens as security schemes.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            AGENT_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An agent token (EdDSA JWT) issued by `POST /admin/agents` or \
                         `POST /admin/agents/{agent}/token`. Never accepted on `/admin`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            ADMIN_TOKEN,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Admin-Token",
                "The admin token (`<data-dir>/admin.token` or `MESHGUARD_ADMIN_TOKEN`). Never \
                 accepted on agent endpoints.",
            ))),
        );
        components.add_security_scheme(
            ADMIN_BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The admin token as a bearer token, on `/admin` only."))
                    .build(),
            ),
        );
    }
}

/// Which guard protects a group of routes; the router builds each group separately
/// (`routes::app`), and the document says of every operation what its group's guard does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// `/`, `/health`, `/metrics`, `/openapi.json`: no credentials.
    Public,
    /// Agent endpoints: the agent token, checked by each handler before it reads the body.
    Agent,
    /// `/admin`: the admin token, checked by a middleware before any handler.
    Admin,
}

impl Group {
    fn tag(self) -> &'static str {
        match self {
            Group::Public => "public",
            Group::Agent => "agent",
            Group::Admin => "admin",
        }
    }

    /// Tags every operation of `paths` with the group, and adds what its guard implies: the
    /// security requirement and refusals, and the trace id headers of agent endpoints. A
    /// response the handler documents itself is kept.
    pub fn describe(self, paths: &mut Paths) {
        for item in paths.paths.values_mut() {
            // One handler serving several methods (the passthrough routes) documents each
            // method under the same id; ids must be unique, so each gets its method.
            let ids: Vec<Option<String>> = operations(item)
                .map(|(_, operation)| operation.operation_id.clone())
                .collect();
            let shared = ids.len() > 1 && ids.windows(2).all(|pair| pair.first() == pair.get(1));
            for (method, operation) in operations(item) {
                if shared
                    && let Some(id) = &mut operation.operation_id
                    && !id.ends_with(method)
                {
                    id.push('_');
                    id.push_str(method);
                }
                operation.tags = Some(vec![self.tag().to_owned()]);
                match self {
                    Group::Public => {}
                    Group::Agent => {
                        operation.security = Some(vec![SecurityRequirement::new::<_, _, &str>(
                            AGENT_TOKEN,
                            [],
                        )]);
                        add_responses(&mut operation.responses, TokenRefusals::responses());
                        add_trace_headers(operation);
                    }
                    Group::Admin => {
                        operation.security = Some(vec![
                            SecurityRequirement::new::<_, _, &str>(ADMIN_TOKEN, []),
                            SecurityRequirement::new::<_, _, &str>(ADMIN_BEARER, []),
                        ]);
                        add_responses(&mut operation.responses, AdminRefusals::responses());
                    }
                }
            }
        }
    }
}

/// Every operation of a path item, with its method.
fn operations(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("options", &mut item.options),
        ("head", &mut item.head),
        ("patch", &mut item.patch),
        ("trace", &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.as_mut().map(|operation| (method, operation)))
}

fn add_responses(
    responses: &mut Responses,
    shared: BTreeMap<String, RefOr<utoipa::openapi::Response>>,
) {
    for (status, response) in shared {
        responses.responses.entry(status).or_insert(response);
    }
}

/// The trace id a client may send (every answer echoes it in both headers, as the `agent` tag
/// says once for all).
fn add_trace_headers(operation: &mut Operation) {
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    for (name, description) in [
        (
            "X-Trace-ID",
            "Correlates the requests of one task in the audit trail; generated (UUIDv7) when \
             absent, at most 128 visible ASCII characters.",
        ),
        (
            "X-MeshGuard-Trace-ID",
            "The same as `X-Trace-ID` (MeshGuard's SDK header); `X-Trace-ID` wins when both \
             are sent.",
        ),
        (
            "traceparent",
            "W3C Trace Context: without `X-Trace-ID`, the request is audited under its trace \
             id; with OpenTelemetry traces on, the gateway's span is a child of its span.",
        ),
    ] {
        if !parameters.iter().any(|p| p.name == name) {
            parameters.push(header_parameter(name, description));
        }
    }
}

/// An optional request header.
pub fn header_parameter(name: &str, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .description(Some(description))
        .schema(Some(String::schema()))
        .build()
}

/// A JSON response whose body is the named schema.
fn json_response(description: &str, body: RefOr<Schema>) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", Content::new(Some(body)))
        .build()
        .into()
}

fn reference<T: ToSchema>() -> RefOr<Schema> {
    Ref::from_schema_name(T::name()).into()
}

/// The `Retry-After` header of a 429 or a rate-limited 403.
fn with_retry_after(
    response: RefOr<utoipa::openapi::Response>,
) -> RefOr<utoipa::openapi::Response> {
    match response {
        RefOr::T(mut response) => {
            response.headers.insert(
                "Retry-After".to_owned(),
                HeaderBuilder::new()
                    .schema(u64::schema())
                    .description(Some("Whole seconds until one more request fits."))
                    .build(),
            );
            RefOr::T(response)
        }
        other => other,
    }
}

/// What any agent endpoint answers to a token it does not honour, before anything else.
pub struct TokenRefusals;

impl IntoResponses for TokenRefusals {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        BTreeMap::from([
            (
                "401".to_owned(),
                json_response(
                    "`unauthorized`: the token is missing, malformed, forged, expired, unknown, \
                     or its agent is revoked.",
                    reference::<ErrorBody>(),
                ),
            ),
            (
                "429".to_owned(),
                with_retry_after(json_response(
                    "`rate_limited`: a validly signed token that is no longer honoured, replayed \
                     past the agent's refusal budget; or a record past the agent's record budget.",
                    reference::<RateLimitedBody>(),
                )),
            ),
        ])
    }
}

/// What an endpoint that reads a JSON body answers when the body is not one it accepts.
pub struct BodyRefusals;

impl IntoResponses for BodyRefusals {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        BTreeMap::from([
            (
                "400".to_owned(),
                json_response(
                    "`bad_request`: the body is not JSON, a field has the wrong type, a key is \
                     repeated or the body nests deeper than 32 levels; the message names the field.",
                    reference::<ErrorBody>(),
                ),
            ),
            (
                "408".to_owned(),
                json_response(
                    "`request_timeout`: the body did not arrive within `server.body_timeout`.",
                    reference::<ErrorBody>(),
                ),
            ),
            (
                "413".to_owned(),
                json_response(
                    "`payload_too_large`: the body is over the limit (default 64 KiB).",
                    reference::<ErrorBody>(),
                ),
            ),
        ])
    }
}

/// What the admin API answers before any handler, or when its store cannot be reached.
pub struct AdminRefusals;

impl IntoResponses for AdminRefusals {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        BTreeMap::from([
            (
                "401".to_owned(),
                json_response(
                    "`unauthorized`: no admin token, a wrong one, or an agent token.",
                    reference::<ErrorBody>(),
                ),
            ),
            (
                "503".to_owned(),
                json_response(
                    "`unavailable`: the store cannot be reached.",
                    reference::<ErrorBody>(),
                ),
            ),
        ])
    }
}

/// The 429 of an endpoint that answers a rate limit with 429 (`GET /proxy/check`, the proxy,
/// forward auth): the rate-limited decision, or the refusal of a dead token replayed too often.
pub struct DecisionOrRefusal;

impl PartialSchema for DecisionOrRefusal {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .description(Some(
                "A `rate_limited` decision, or the refusal of a token that is no longer honoured.",
            ))
            .item(reference::<CheckAnswer<'static>>())
            .item(reference::<RateLimitedBody>())
            .into()
    }
}

impl ToSchema for DecisionOrRefusal {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((CheckAnswer::name().into_owned(), CheckAnswer::schema()));
        CheckAnswer::schemas(schemas);
        schemas.push((
            RateLimitedBody::name().into_owned(),
            RateLimitedBody::schema(),
        ));
    }
}

/// The document: the fixed parts of [`ApiDoc`] and every documented route of the router.
pub fn document() -> OpenApi {
    crate::routes::documented().into_openapi()
}

/// The document as served and committed: pretty JSON with a final newline, built once.
pub fn document_json() -> Result<&'static str, String> {
    static JSON: LazyLock<Result<String, String>> = LazyLock::new(|| {
        document()
            .to_pretty_json()
            .map(|json| json + "\n")
            .map_err(|e| e.to_string())
    });
    JSON.as_deref().map_err(Clone::clone)
}

/// `GET /openapi.json`: this document. Unauthenticated like `/health`: it describes the API, not
/// any agent, policy or event, and API tooling fetches it before it has a token.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi_document",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this gateway's HTTP API.",
         content_type = "application/json", body = Object)
    )
)]
pub async fn serve() -> Response {
    match document_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(cause) => crate::error::ApiError::Internal(cause).into_response(),
    }
}
