//! `/console`: the web console for the humans in charge — sign in with the admin token, see what
//! the gateway decides, decide approvals, follow the audit trail live, revoke and restore agents.
//!
//! Server-rendered HTML (minijinja templates, autoescaped, embedded in the binary with the one
//! stylesheet and the one script; nothing is fetched from elsewhere). Reading works without
//! JavaScript; the script only makes the audit tail and the approval queue live (SSE) and asks
//! before a revoke. Every page carries a strict Content-Security-Policy (no inline script),
//! `X-Frame-Options: DENY` and `Cache-Control: no-store`; the session cookie is `HttpOnly`,
//! `SameSite=Strict` and scoped to `/console`; every form carries a CSRF token. Console actions
//! go through the same admin paths as the API, so they are audited the same way, naming the
//! operator.

mod session;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Form;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures::Stream;
use meshguard_store::{
    AgentStatus, ApprovalStatus, ApprovalVerdict, AuditEvent, AuditFilter, AuditKind, AuditOrder,
    NewAuditEvent, PageRequest, StatsQuery, StoreChange,
};
use minijinja::{Environment, Value as Jinja, context};
use serde::Deserialize;
use serde_json::Map;
use time::OffsetDateTime;
use tokio::sync::broadcast::error::RecvError;

use crate::auth::secrets_match;

use super::operators;
use crate::state::AppState;

pub use session::{ConsoleSessions, Role};
use session::{LOGIN_COOKIE, SESSION_COOKIE, cookie};

/// The templates, compiled once.
fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        let pages = [
            ("base.html", include_str!("templates/base.html")),
            ("login.html", include_str!("templates/login.html")),
            ("overview.html", include_str!("templates/overview.html")),
            ("approvals.html", include_str!("templates/approvals.html")),
            ("audit.html", include_str!("templates/audit.html")),
            ("agents.html", include_str!("templates/agents.html")),
            ("agent.html", include_str!("templates/agent.html")),
            ("policies.html", include_str!("templates/policies.html")),
            ("policy.html", include_str!("templates/policy.html")),
            (
                "policy_result.html",
                include_str!("templates/policy_result.html"),
            ),
            ("event.html", include_str!("templates/event.html")),
            (
                "agent_token.html",
                include_str!("templates/agent_token.html"),
            ),
        ];
        for (name, text) in pages {
            // A template that does not parse is a build defect; the test of every page finds it.
            if let Err(err) = env.add_template(name, text) {
                tracing::error!(template = name, error = %err, "console template does not parse");
            }
        }
        env
    })
}

/// A page, or a plain-text 500 naming the template fault.
fn render(name: &str, ctx: Jinja) -> Response {
    match templates()
        .get_template(name)
        .and_then(|template| template.render(ctx))
    {
        Ok(html) => Html(html).into_response(),
        Err(err) => {
            tracing::error!(template = name, error = %err, "console page not rendered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "console page not rendered",
            )
                .into_response()
        }
    }
}

/// Every console route; mounted by [`super::app`] when `console.enabled`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(overview))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/approvals", get(approvals_page))
        .route("/console/approvals/{id}/decide", post(decide))
        .route("/console/audit", get(audit_page))
        .route("/console/audit/export", get(export))
        .route("/console/live", get(live))
        .route("/console/agents", get(agents_page).post(create_agent))
        .route("/console/agents/{id}", get(agent_page))
        .route("/console/agents/{id}/{verb}", post(agent_status))
        .route("/console/policies", get(policies_page))
        .route("/console/policies/test", get(policy_test))
        .route("/console/policies/draft", post(policy_draft))
        .route("/console/policies/{name}", get(policy_page))
        .route("/console/audit/event/{id}", get(event_page))
        .route("/console/audit/verify", get(verify_page))
        .route("/console/assets/{file}", get(asset))
        .layer(middleware::from_fn(security_headers))
}

/// The headers of every console answer: nothing runs but our own script, nothing frames us,
/// nothing is cached.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// `GET /console/assets/{file}`: the stylesheet and the script, from the binary.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (
            include_str!("assets/console.css"),
            "text/css; charset=utf-8",
        ),
        "console.js" => (
            include_str!("assets/console.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// The signed-in operator of a request, if any.
fn signed_in(state: &AppState, headers: &HeaderMap) -> Option<session::Session> {
    cookie(headers, SESSION_COOKIE).and_then(|id| state.console.get(&id))
}

/// The signed-in operator of a console request; a request without a live session is sent to
/// sign in.
struct Operator(session::Session);

impl axum::extract::FromRequestParts<AppState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        signed_in(state, &parts.headers)
            .map(Operator)
            .ok_or_else(to_sign_in)
    }
}

/// Where a request without a session goes.
fn to_sign_in() -> Response {
    Redirect::to("/console/login").into_response()
}

/// Whether a POST's CSRF token matches its session's.
fn csrf_ok(session: &session::Session, given: &str) -> bool {
    secrets_match(given, &session.csrf)
}

/// The answer to a POST whose CSRF token is missing or wrong: refused, nothing changed.
fn csrf_refused() -> Response {
    (
        StatusCode::FORBIDDEN,
        "the form's CSRF token is missing or wrong: reload the page and try again",
    )
        .into_response()
}

/// What every page's frame shows.
fn frame(session: &session::Session, page: &str, title: &str, pending: usize) -> Jinja {
    context! {
        operator => session.operator.clone(),
        role => session.role.as_str(),
        csrf => session.csrf.clone(),
        page => page,
        title => title,
        pending_count => pending,
    }
}

async fn pending_count(state: &AppState) -> usize {
    pending_approvals(state).await.map(|p| p.len()).unwrap_or(0)
}

async fn pending_approvals(
    state: &AppState,
) -> Result<Vec<meshguard_store::ApprovalRecord>, meshguard_store::StoreError> {
    let now = OffsetDateTime::now_utc();
    let page = state
        .store
        .list_approvals(Some(ApprovalStatus::Pending), &PageRequest::first(1000))
        .await?;
    let mut pending: Vec<_> = page
        .items
        .into_iter()
        .filter(|a| a.expires_at > now)
        .collect();
    pending.sort_by_key(|a| std::cmp::Reverse(a.created_at));
    Ok(pending)
}

/// `GET /console/login`: the sign-in form, with a fresh token for its CSRF check.
async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if signed_in(&state, &headers).is_some() {
        return Redirect::to("/console").into_response();
    }
    login_form(None, StatusCode::OK)
}

fn login_form(error: Option<&str>, status: StatusCode) -> Response {
    let token = session::random_token();
    let mut response = render(
        "login.html",
        context! { title => "Sign in", page => "login", error => error, csrf => token.clone() },
    );
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age=600"
    )) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    /// An operator's name; empty: the admin token is given.
    #[serde(default)]
    operator: String,
    /// The operator's password, or the admin token.
    token: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /console/login`: the admin token opens an `admin` session. Attempts are rate-limited
/// (10 failures a minute per gateway) and every attempt is audited.
async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected_csrf = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected_csrf.is_empty() || !secrets_match(&form.csrf, &expected_csrf) {
        return login_form(
            Some("The sign-in form expired or came from elsewhere: try again."),
            StatusCode::FORBIDDEN,
        );
    }
    if let Err(wait) = state.console.may_try() {
        return login_form(
            Some(&format!("Too many failed sign-ins: try again in {wait} s.")),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let name = form.operator.trim();
    let signed = if name.is_empty() {
        secrets_match(form.token.trim(), state.admin_token.expose())
            .then_some(("admin", Role::Admin))
    } else {
        match state.store.get_operator(name).await {
            Ok(operator) => {
                let good =
                    operators::verify_password(form.token.clone(), operator.password_hash).await;
                match Role::parse(&operator.role) {
                    Some(role) if good => Some((name, role)),
                    _ => None,
                }
            }
            Err(_) => {
                // As slow as a wrong password, so a name cannot be probed by timing.
                let _ = operators::hash_password(form.token.clone()).await;
                None
            }
        }
    };
    let who = if name.is_empty() { "admin" } else { name };
    audit_sign_in(&state, who, signed.is_some()).await;
    let Some((operator, role)) = signed else {
        state.console.failed();
        let error = if name.is_empty() {
            "That is not the admin token."
        } else {
            "Unknown operator or wrong password."
        };
        return login_form(Some(error), StatusCode::UNAUTHORIZED);
    };
    let session = state.console.open(operator, role);
    let mut response = Redirect::to("/console").into_response();
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes() == b"https");
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
        session.id,
        session::SESSION_LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// An audit event (kind `admin`) of something an operator did in the console itself.
async fn audit_console(state: &AppState, operator: &str, action: &str, reason: String) {
    let mut context = Map::new();
    context.insert("operator".into(), operator.into());
    let event = NewAuditEvent {
        reason: Some(reason),
        context,
        ..NewAuditEvent::new(AuditKind::Admin, action, &state.instance_id)
    };
    if let Err(err) = state.audit.append(event).await {
        tracing::warn!(error = %err, "console action not audited");
    }
}

async fn audit_sign_in(state: &AppState, operator: &str, good: bool) {
    let mut context = Map::new();
    context.insert("operator".into(), operator.into());
    let event = NewAuditEvent {
        reason: Some(if good {
            format!("operator `{operator}` signed in to the console")
        } else {
            format!("a console sign-in as `{operator}` was refused")
        }),
        context,
        ..NewAuditEvent::new(
            AuditKind::Admin,
            if good {
                "console.sign_in"
            } else {
                "console.sign_in_refused"
            },
            &state.instance_id,
        )
    };
    if let Err(err) = state.audit.append(event).await {
        tracing::warn!(error = %err, "console sign-in not audited");
    }
}

#[derive(Debug, Default, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /console/logout`.
async fn logout(
    State(state): State<AppState>,
    Operator(session): Operator,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !csrf_ok(&session, &form.csrf) {
        return csrf_refused();
    }
    state.console.close(&session.id);
    audit_console(
        &state,
        &session.operator,
        "console.sign_out",
        format!("operator `{}` signed out of the console", session.operator),
    )
    .await;
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "mg_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}

/// `GET /console`: the overview.
async fn overview(State(state): State<AppState>, Operator(session): Operator) -> Response {
    state.audit.settled().await;
    let to = OffsetDateTime::now_utc();
    let from = to - time::Duration::hours(1);
    let stats = state
        .store
        .audit_stats(&StatsQuery {
            from,
            to,
            agent: None,
            hourly: false,
        })
        .await;
    let (total, allow, deny, approval, top_denied) = match &stats {
        Ok(s) => (
            s.total,
            s.allowed,
            s.denied,
            s.require_approval,
            s.top_denied
                .iter()
                .map(|a| (a.action.clone(), a.count))
                .collect::<Vec<_>>(),
        ),
        Err(_) => (0, 0, 0, 0, Vec::new()),
    };
    let recent = recent_checks(&state, from).await;
    let chart = chart::per_minute(&recent, to);
    let mut agents: BTreeMap<String, u64> = BTreeMap::new();
    for event in &recent {
        if let Some(agent) = &event.event.agent {
            *agents.entry(agent.name.clone()).or_default() += 1;
        }
    }
    let mut top_agents: Vec<(String, u64)> = agents.into_iter().collect();
    top_agents.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top_agents.truncate(10);
    let store_ok = stats.is_ok();
    let policy_files = meshguard_store::all_policies(&*state.store)
        .await
        .map(|all| {
            all.iter()
                .filter(|p| matches!(p.origin, meshguard_store::PolicyOrigin::File(_)))
                .count()
        })
        .unwrap_or(0);
    let chain = match state.console.last_verification() {
        Some((at, true, events)) => format!(
            "intact: {events} events verified {} ago",
            ago(OffsetDateTime::now_utc() - at)
        ),
        Some((at, false, _)) => format!(
            "BROKEN at the last verification, {} ago",
            ago(OffsetDateTime::now_utc() - at)
        ),
        None => "not verified from the console since the gateway started".to_owned(),
    };
    let receivers = state.alerts.receivers();
    let alerts = if receivers.is_empty() {
        "no receiver configured".to_owned()
    } else {
        receivers
            .iter()
            .map(|r| {
                let sent = state.metrics.alerts_sent.with_label_values(&[*r]).get();
                let failed = state.metrics.alerts_failed.with_label_values(&[*r]).get();
                format!("{r}: {sent} delivered, {failed} failed")
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let limits_ok = state.limiter.ping().await.is_ok();
    let pending = pending_count(&state).await;
    let ctx = context! {
        ..frame(&session, "overview", "Overview", pending),
        ..context! {
            stats => context! { total => total, allow => allow, deny => deny, approval => approval },
            chart => chart,
            top_denied => top_denied,
            top_agents => top_agents,
            health => context! {
                store => if store_ok { "ok" } else { "unavailable" },
                rate_limits => if limits_ok { "ok" } else { "unavailable" },
                backend => state.limiter.backend(),
                policies => state.policies.current().policies().count(),
                policy_files => policy_files,
                alerts => alerts,
                chain => chain,
                mode => state.mode.as_str(),
                gateway => state.instance_id.clone(),
            },
        }
    };
    render("overview.html", ctx)
}

/// The checks of the last hour, newest first (at most 10,000: the chart of a busier hour shows
/// its newest 10,000 checks).
async fn recent_checks(state: &AppState, from: OffsetDateTime) -> Vec<AuditEvent> {
    let mut events = Vec::new();
    let mut cursor = None;
    for _ in 0..10 {
        let page = state
            .store
            .query_audit(&AuditFilter {
                limit: 1000,
                kind: Some(AuditKind::Check),
                from: Some(from),
                cursor: cursor.take(),
                order: AuditOrder::NewestFirst,
                ..AuditFilter::default()
            })
            .await;
        let Ok(page) = page else { break };
        events.extend(page.entries);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    events
}

/// How long ago, in words a human reads at a glance.
fn ago(duration: time::Duration) -> String {
    let secs = duration.whole_seconds().max(0);
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
        _ => format!("{} d", secs / 86_400),
    }
}

fn when(ts: OffsetDateTime) -> String {
    ts.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `GET /console/approvals`: the pending queue (newest first) and the decided ones.
async fn approvals_page(
    State(state): State<AppState>,
    Operator(session): Operator,
    headers: HeaderMap,
) -> Response {
    let now = OffsetDateTime::now_utc();
    let pending = pending_approvals(&state).await.unwrap_or_default();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut name_of = async |id: &str| -> String {
        if let Some(name) = names.get(id) {
            return name.clone();
        }
        let name = state
            .store
            .get_agent(id)
            .await
            .map_or_else(|_| id.to_owned(), |a| a.name);
        names.insert(id.to_owned(), name.clone());
        name
    };
    let mut pending_rows = Vec::new();
    for approval in &pending {
        let (policy, asked_context) = asking_check(&state, approval.trace_id.as_deref()).await;
        pending_rows.push(context! {
            id => approval.id.clone(),
            agent => name_of(&approval.agent_id).await,
            action => approval.action.clone(),
            resource => approval.resource.clone(),
            policy => policy,
            age => ago(now - approval.created_at),
            left => ago(approval.expires_at - now),
            arguments => approval.arguments.as_ref().map(|a| {
                serde_json::to_string_pretty(&a.value).unwrap_or_default()
            }),
            context => asked_context,
        });
    }
    let decided_page = state
        .store
        .list_approvals(None, &PageRequest::first(200))
        .await
        .map(|p| p.items)
        .unwrap_or_default();
    let mut decided: Vec<_> = decided_page
        .into_iter()
        .filter(|a| a.decided_at.is_some())
        .collect();
    decided.sort_by_key(|a| std::cmp::Reverse(a.decided_at));
    decided.truncate(50);
    let mut decided_rows = Vec::new();
    for approval in &decided {
        decided_rows.push(context! {
            status => approval.status.as_str(),
            agent => name_of(&approval.agent_id).await,
            action => approval.action.clone(),
            resource => approval.resource.clone(),
            decided_by => approval.decided_by.clone().unwrap_or_default(),
            decided_at => approval.decided_at.map(when).unwrap_or_default(),
        });
    }
    let notice = cookie(&headers, "mg_notice");
    let ctx = context! {
        ..frame(&session, "approvals", "Approvals", pending.len()),
        ..context! {
            pending => pending_rows,
            decided => decided_rows,
            can_decide => session.role.may_decide(),
            notice => notice,
        }
    };
    render("approvals.html", ctx)
}

/// The policy that asked for an approval (the one its trace's check names) and the context the
/// check sent, pretty-printed (empty when it sent none).
async fn asking_check(state: &AppState, trace: Option<&str>) -> (String, String) {
    let Some(trace) = trace else {
        return (String::new(), String::new());
    };
    let event = state
        .store
        .query_audit(&AuditFilter {
            limit: 1,
            trace_id: Some(trace.to_owned()),
            kind: Some(AuditKind::Check),
            order: AuditOrder::OldestFirst,
            ..AuditFilter::default()
        })
        .await
        .ok()
        .and_then(|page| page.entries.into_iter().next());
    let Some(event) = event else {
        return (String::new(), String::new());
    };
    let context = if event.event.context.is_empty() {
        String::new()
    } else {
        serde_json::to_string_pretty(&event.event.context).unwrap_or_default()
    };
    (event.event.policy.unwrap_or_default(), context)
}

#[derive(Debug, Deserialize)]
struct DecideForm {
    #[serde(default)]
    csrf: String,
    verdict: String,
    #[serde(default)]
    note: String,
}

/// `POST /console/approvals/{id}/decide`: approve or deny, as the signed-in operator.
async fn decide(
    State(state): State<AppState>,
    Operator(session): Operator,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<DecideForm>,
) -> Response {
    if !csrf_ok(&session, &form.csrf) {
        return csrf_refused();
    }
    if !session.role.may_decide() {
        return (
            StatusCode::FORBIDDEN,
            "this operator may read, not decide approvals",
        )
            .into_response();
    }
    let verdict = match form.verdict.as_str() {
        "approve" => ApprovalVerdict::Approve,
        "deny" => ApprovalVerdict::Deny,
        _ => return (StatusCode::BAD_REQUEST, "verdict: expected approve or deny").into_response(),
    };
    let note = Some(form.note.trim().to_owned()).filter(|n| !n.is_empty());
    let body = super::approvals::VerdictBody::by(&session.operator, note);
    match super::approvals::settle_by_human(&state, &headers, &id, verdict, body).await {
        Ok(_) => Redirect::to("/console/approvals").into_response(),
        Err(err) => err.into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct AuditQuery {
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    decision: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    trace: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
}

fn audit_filter(query: &AuditQuery, limit: u32) -> AuditFilter {
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
    AuditFilter {
        limit,
        agent: nonempty(&query.agent),
        decision: nonempty(&query.decision),
        code: nonempty(&query.code),
        action: nonempty(&query.action),
        trace_id: nonempty(&query.trace),
        cursor: nonempty(&query.cursor),
        order: if query.trace.as_deref().is_some_and(|t| !t.is_empty()) {
            AuditOrder::OldestFirst
        } else {
            AuditOrder::NewestFirst
        },
        ..AuditFilter::default()
    }
}

/// `GET /console/audit`: the newest events (live when unfiltered), filters, paging, a trace.
async fn audit_page(
    State(state): State<AppState>,
    Operator(session): Operator,
    Query(query): Query<AuditQuery>,
) -> Response {
    state.audit.settled().await;
    let page = state.store.query_audit(&audit_filter(&query, 100)).await;
    let (events, next_cursor) = match page {
        Ok(page) => (page.entries, page.next_cursor),
        Err(_) => (Vec::new(), None),
    };
    let rows: Vec<Jinja> = events
        .iter()
        .map(|e| {
            let trace = e.event.trace_id.clone().unwrap_or_default();
            context! {
                id => e.event.id.clone(),
                ts => when(e.event.ts),
                decision => e.event.decision.map(|d| d.as_str()).unwrap_or(e.event.kind.as_str()),
                code => e.event.code.map(|c| c.as_str()).unwrap_or_default(),
                agent => e.event.agent.as_ref().map(|a| a.name.clone()).unwrap_or_default(),
                action => e.event.action.clone(),
                resource => e.event.resource.clone().unwrap_or_default(),
                trace_short => trace.chars().take(13).collect::<String>(),
                trace => trace,
            }
        })
        .collect();
    let live = query.agent.as_deref().unwrap_or_default().is_empty()
        && query.decision.as_deref().unwrap_or_default().is_empty()
        && query.code.as_deref().unwrap_or_default().is_empty()
        && query.action.as_deref().unwrap_or_default().is_empty()
        && query.trace.as_deref().unwrap_or_default().is_empty()
        && query.cursor.is_none();
    let pending = pending_count(&state).await;
    let ctx = context! {
        ..frame(&session, "audit", "Audit trail", pending),
        ..context! {
            events => rows,
            next_cursor => next_cursor,
            live => live,
            filters => context! {
                agent => query.agent.clone().unwrap_or_default(),
                decision => query.decision.clone().unwrap_or_default(),
                code => query.code.clone().unwrap_or_default(),
                action => query.action.clone().unwrap_or_default(),
                trace => query.trace.clone().unwrap_or_default(),
            },
        }
    };
    render("audit.html", ctx)
}

/// `GET /console/audit/export`: the filtered events as JSON lines (at most 10,000).
async fn export(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<AuditQuery>,
) -> Response {
    if signed_in(&state, &headers).is_none() {
        return to_sign_in();
    }
    let mut filter = audit_filter(&query, 1000);
    state.audit.settled().await;
    let mut lines = String::new();
    for _ in 0..10 {
        let Ok(page) = state.store.query_audit(&filter).await else {
            return (StatusCode::SERVICE_UNAVAILABLE, "the store cannot be read").into_response();
        };
        for event in &page.entries {
            if let Ok(line) = serde_json::to_string(event) {
                lines.push_str(&line);
                lines.push('\n');
            }
        }
        match page.next_cursor {
            Some(next) => filter.cursor = Some(next),
            None => break,
        }
    }
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"meshguard-audit.jsonl\"",
            ),
        ],
        lines,
    )
        .into_response()
}

/// `GET /console/live`: SSE of committed audit events (`audit`) and approval changes
/// (`approval`), for the live parts of the pages.
async fn live(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if signed_in(&state, &headers).is_none() {
        return to_sign_in();
    }
    Sse::new(live_events(&state))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn live_events(state: &AppState) -> impl Stream<Item = Result<Event, Infallible>> + use<> {
    let audit = futures::stream::unfold(state.audit.subscribe(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(event) => {
                    let data = serde_json::to_string(&event).unwrap_or_default();
                    return Some((Ok(Event::default().event("audit").data(data)), rx));
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let approvals = futures::stream::unfold(state.store.subscribe_changes(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(StoreChange::Approval { .. } | StoreChange::Resync)
                | Err(RecvError::Lagged(_)) => {
                    return Some((Ok(Event::default().event("approval").data("{}")), rx));
                }
                Ok(_) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let stopping = state.stopping.subscribe();
    let stop = async move {
        let mut stopping = stopping;
        let _ = stopping.wait_for(|stopping| *stopping).await;
    };
    futures::StreamExt::take_until(futures::stream::select(audit, approvals), Box::pin(stop))
}

/// `GET /console/agents`.
async fn agents_page(State(state): State<AppState>, Operator(session): Operator) -> Response {
    let agents = state
        .store
        .list_agents(&PageRequest::first(1000))
        .await
        .map(|p| p.items)
        .unwrap_or_default();
    let mut last_seen = Vec::with_capacity(agents.len());
    for agent in agents.iter().take(500) {
        let newest = state
            .store
            .query_audit(&AuditFilter {
                limit: 1,
                agent: Some(agent.id.clone()),
                order: AuditOrder::NewestFirst,
                ..AuditFilter::default()
            })
            .await
            .ok()
            .and_then(|page| page.entries.into_iter().next())
            .map(|event| format!("{} ago", ago(OffsetDateTime::now_utc() - event.event.ts)));
        last_seen.push(newest.unwrap_or_else(|| "never".to_owned()));
    }
    let rows: Vec<Jinja> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| {
            context! {
                last => last_seen.get(i).cloned().unwrap_or_default(),
                id => a.id.clone(),
                name => a.name.clone(),
                status => match a.status { AgentStatus::Active => "active", AgentStatus::Revoked => "revoked" },
                trust => a.trust.clone(),
                tags => a.tags.iter().cloned().collect::<Vec<_>>().join(", "),
                created => when(a.created_at),
            }
        })
        .collect();
    let pending = pending_count(&state).await;
    let ctx = context! {
        ..frame(&session, "agents", "Agents", pending),
        ..context! { agents => rows, can_admin => session.role == Role::Admin }
    };
    render("agents.html", ctx)
}

/// `POST /console/agents/{id}/revoke|restore`: the kill switch, and its undo.
async fn agent_status(
    State(state): State<AppState>,
    Operator(session): Operator,
    Path((id, verb)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !csrf_ok(&session, &form.csrf) {
        return csrf_refused();
    }
    if session.role != Role::Admin {
        return (
            StatusCode::FORBIDDEN,
            "only an admin may revoke or restore agents",
        )
            .into_response();
    }
    let status = match verb.as_str() {
        "revoke" => AgentStatus::Revoked,
        "restore" => AgentStatus::Active,
        "rotate" => {
            return match super::agents::issue(
                &state,
                &headers,
                id,
                None,
                true,
                Some(&session.operator),
            )
            .await
            {
                Ok((agent, issued, revoked)) => {
                    token_page(
                        &state,
                        &session,
                        "Token rotated",
                        &agent,
                        &issued.token,
                        revoked,
                    )
                    .await
                }
                Err(err) => err.into_response(),
            };
        }
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    match super::agents::set_status(&state, &headers, id, status, Some(&session.operator)).await {
        Ok(_) => Redirect::to("/console/agents").into_response(),
        Err(err) => err.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct CreateAgentForm {
    #[serde(default)]
    csrf: String,
    name: String,
    #[serde(default)]
    trust: String,
    #[serde(default)]
    tags: String,
}

/// `POST /console/agents`: creates an agent and shows its token once (this page is the only
/// place it appears; it is never cached).
async fn create_agent(
    State(state): State<AppState>,
    Operator(session): Operator,
    headers: HeaderMap,
    Form(form): Form<CreateAgentForm>,
) -> Response {
    if !csrf_ok(&session, &form.csrf) {
        return csrf_refused();
    }
    if session.role != Role::Admin {
        return (StatusCode::FORBIDDEN, "only an admin may create agents").into_response();
    }
    let agent = meshguard_store::NewAgent {
        name: form.name.trim().to_owned(),
        trust: if form.trust.is_empty() {
            "verified".to_owned()
        } else {
            form.trust
        },
        tags: form
            .tags
            .split(',')
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
        description: None,
    };
    match super::agents::create_agent(&state, &headers, agent, None, Some(&session.operator)).await
    {
        Ok((agent, issued)) => {
            token_page(&state, &session, "Agent created", &agent, &issued.token, 0).await
        }
        Err(err) => err.into_response(),
    }
}

async fn token_page(
    state: &AppState,
    session: &session::Session,
    heading: &str,
    agent: &meshguard_store::AgentRecord,
    token: &str,
    revoked: u64,
) -> Response {
    let pending = pending_count(state).await;
    let mut response = render(
        "agent_token.html",
        context! {
            ..frame(session, "agents", heading, pending),
            ..context! {
                heading => heading,
                agent => agent.name.clone(),
                agent_id => agent.id.clone(),
                token => token,
                revoked => revoked,
            }
        },
    );
    *response.status_mut() = StatusCode::CREATED;
    response
}

/// `GET /console/agents/{id}`: one agent and its effective permissions.
async fn agent_page(
    State(state): State<AppState>,
    Operator(session): Operator,
    Path(id): Path<String>,
) -> Response {
    let (agent, permissions) = match super::agents::permissions_of(&state, &id).await {
        Ok(found) => found,
        Err(err) => return err.into_response(),
    };
    let entries = |list: &[meshguard_policy::PermissionEntry]| -> Vec<Jinja> {
        list.iter()
            .map(|e| {
                let conditions = serde_json::to_string(&e.conditions).unwrap_or_default();
                context! {
                    pattern => e.pattern.clone(),
                    policy => e.policy.clone(),
                    rule => e.rule.clone(),
                    conditions => if conditions == "{}" { String::new() } else { conditions },
                }
            })
            .collect()
    };
    let approvals: Vec<Jinja> = permissions
        .approvals
        .iter()
        .map(|a| {
            let when = serde_json::to_string(&a.when).unwrap_or_default();
            context! {
                pattern => a.pattern.clone(),
                policy => a.policy.clone(),
                when => if when == "{}" { "always".to_owned() } else { when },
            }
        })
        .collect();
    let mut limits: Vec<(String, String)> = permissions
        .rate_limits
        .iter()
        .map(|l| {
            let of = match &l.rule {
                Some(rule) => format!("rule {rule} of {}", l.policy),
                None => format!("policy {}", l.policy),
            };
            let per = [
                l.requests_per_minute.map(|n| format!("{n} per minute")),
                l.requests_per_hour.map(|n| format!("{n} per hour")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ");
            (of, per)
        })
        .collect();
    limits.extend(permissions.budgets.iter().map(|b| {
        let of = match &b.rule {
            Some(rule) => format!("budget of rule {rule} of {}", b.policy),
            None => format!("budget of policy {}", b.policy),
        };
        let per = [
            b.budget
                .per_hour
                .map(|n| format!("{} per hour", meshguard_policy::format_amount(n))),
            b.budget
                .per_day
                .map(|n| format!("{} per day", meshguard_policy::format_amount(n))),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        (of, format!("`{}`: {per}", b.budget.field))
    }));
    let pending = pending_count(&state).await;
    let ctx = context! {
        ..frame(&session, "agents", &agent.name, pending),
        ..context! {
            agent => context! {
                id => agent.id.clone(),
                name => agent.name.clone(),
                status => match agent.status { AgentStatus::Active => "active", AgentStatus::Revoked => "revoked" },
                trust => agent.trust.clone(),
                tags => agent.tags.iter().cloned().collect::<Vec<_>>().join(", "),
            },
            policies => permissions.policies.clone(),
            default_effect => permissions.default_effect.as_str(),
            allowed => entries(&permissions.allowed),
            denied => entries(&permissions.denied),
            approvals => approvals,
            limits => limits,
        }
    };
    render("agent.html", ctx)
}

/// Every lint warning of the policies in force against the stored agents, one line each.
async fn set_warnings(state: &AppState, only: Option<&str>) -> Vec<String> {
    let policies: Vec<meshguard_policy::Policy> =
        state.policies.current().policies().cloned().collect();
    let agents: Vec<meshguard_policy::AgentProfile> = meshguard_store::all_agents(&*state.store)
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|a| crate::auth::profile_of(a).ok())
        .collect();
    meshguard_policy::lint(&policies, Some(&agents))
        .into_iter()
        .filter(|w| only.is_none_or(|name| w.policy == name))
        .map(|w| w.to_string())
        .collect()
}

/// `GET /console/policies`: the policies in force, their warnings, a test form and a draft editor.
async fn policies_page(State(state): State<AppState>, Operator(session): Operator) -> Response {
    let stored = meshguard_store::all_policies(&*state.store)
        .await
        .unwrap_or_default();
    let current = state.policies.current();
    let rows: Vec<Jinja> = stored
        .iter()
        .map(|p| {
            let shadow = current
                .policies()
                .any(|q| q.name() == p.name && q.mode() == meshguard_policy::PolicyMode::Shadow);
            context! {
                name => p.name.clone(),
                version => p.version.clone(),
                origin => p.origin.to_string(),
                revision => p.revision,
                updated => when(p.updated_at),
                shadow => shadow,
            }
        })
        .collect();
    let agents: Vec<String> = meshguard_store::all_agents(&*state.store)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|a| a.name)
        .collect();
    let warnings = set_warnings(&state, None).await;
    let pending = pending_count(&state).await;
    let ctx = context! {
        ..frame(&session, "policies", "Policies", pending),
        ..context! {
            policies => rows,
            warnings => warnings,
            agents => agents,
            can_admin => session.role == Role::Admin,
        }
    };
    render("policies.html", ctx)
}

/// `GET /console/policies/{name}`: source, warnings and revisions of one policy.
async fn policy_page(
    State(state): State<AppState>,
    Operator(session): Operator,
    Path(name): Path<String>,
) -> Response {
    let stored = match state.store.get_policy(&name).await {
        Ok(stored) => stored,
        Err(err) => return crate::error::ApiError::from(err).into_response(),
    };
    let revisions = state
        .store
        .policy_revisions(&name, &PageRequest::first(1000))
        .await
        .map(|p| p.items)
        .unwrap_or_default();
    let revisions: Vec<Jinja> = revisions
        .iter()
        .rev()
        .map(|r| {
            context! {
                revision => r.revision,
                version => r.version.clone(),
                origin => r.origin.to_string(),
                created => when(r.created_at),
            }
        })
        .collect();
    let warnings = set_warnings(&state, Some(&name)).await;
    let pending = pending_count(&state).await;
    let ctx = context! {
        ..frame(&session, "policies", &stored.name, pending),
        ..context! {
            policy => context! {
                name => stored.name.clone(),
                version => stored.version.clone(),
                revision => stored.revision,
                origin => stored.origin.to_string(),
                updated => when(stored.updated_at),
                source => stored.source.clone(),
            },
            warnings => warnings,
            revisions => revisions,
        }
    };
    render("policy.html", ctx)
}

#[derive(Debug, Deserialize)]
struct TestQuery {
    agent: String,
    action: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    context: String,
}

/// `GET /console/policies/test`: what `POST /admin/decide` answers (audited as a test).
async fn policy_test(
    State(state): State<AppState>,
    Operator(session): Operator,
    headers: HeaderMap,
    Query(query): Query<TestQuery>,
) -> Response {
    let pending = pending_count(&state).await;
    let show = |decision: Option<Jinja>, errors: Vec<String>| {
        render(
            "policy_result.html",
            context! {
                ..frame(&session, "policies", "Test a request", pending),
                ..context! { heading => "Test a request", decision => decision, errors => errors }
            },
        )
    };
    let context_value: serde_json::Value = if query.context.trim().is_empty() {
        serde_json::json!({})
    } else {
        match serde_json::from_str(&query.context) {
            Ok(value @ serde_json::Value::Object(_)) => value,
            Ok(_) => {
                return show(
                    None,
                    vec!["context: a JSON object, e.g. {\"arguments\": {}}".into()],
                );
            }
            Err(err) => return show(None, vec![format!("context: not JSON: {err}")]),
        }
    };
    let resource = if query.resource.trim().is_empty() {
        "*".to_owned()
    } else {
        query.resource.clone()
    };
    let body = serde_json::json!({
        "agent": query.agent,
        "action": query.action,
        "resource": resource,
        "context": context_value,
    });
    let body: super::decide::DecideBody = match serde_json::from_value(body) {
        Ok(body) => body,
        Err(err) => return show(None, vec![err.to_string()]),
    };
    let answer = super::decide::explain_check(
        State(state.clone()),
        headers.clone(),
        crate::extract::ApiJson(body),
    )
    .await;
    match answer {
        Ok(super::sorted::SortedJson(answer)) => {
            // Read as the JSON the admin API answers, so the page shows what `decide` says.
            let answer = serde_json::to_value(&answer).unwrap_or_default();
            let text = |pointer: &str| {
                answer
                    .pointer(pointer)
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("-")
                    .to_owned()
            };
            let explanation = answer
                .get("explanation")
                .map(|e| serde_json::to_string_pretty(e).unwrap_or_default())
                .unwrap_or_default();
            let decision = context! {
                decision => text("/decision"),
                code => text("/code"),
                reason => text("/reason"),
                policy => text("/policy"),
                rule => text("/rule"),
                action => text("/action"),
                resource => text("/resource"),
                agent => text("/agent/name"),
                explanation => explanation,
            };
            show(Some(decision), Vec::new())
        }
        Err(err) => show(None, vec![err.to_string()]),
    }
}

#[derive(Debug, Deserialize)]
struct DraftForm {
    #[serde(default)]
    csrf: String,
    source: String,
    #[serde(default)]
    apply: String,
}

/// `POST /console/policies/draft`: validates a pasted policy (errors with line and column,
/// lints against the policies in force and the agents); with `apply`, an admin applies it.
async fn policy_draft(
    State(state): State<AppState>,
    Operator(session): Operator,
    headers: HeaderMap,
    Form(form): Form<DraftForm>,
) -> Response {
    if !csrf_ok(&session, &form.csrf) {
        return csrf_refused();
    }
    let checked = match super::policies::validation(&state, &form.source).await {
        Ok(checked) => checked,
        Err(err) => return err.into_response(),
    };
    let errors: Vec<String> = checked.errors.iter().map(|e| e.message.clone()).collect();
    let warnings: Vec<String> = checked.warnings.iter().map(|w| w.text.clone()).collect();
    let valid = checked.valid;
    let mut message = if valid {
        "The draft is valid.".to_owned()
    } else {
        "The draft does not validate: nothing was applied.".to_owned()
    };
    if valid && form.apply == "yes" {
        if session.role != Role::Admin {
            return (StatusCode::FORBIDDEN, "only an admin may apply policies").into_response();
        }
        match super::policies::apply_text(&state, &headers, &form.source, None).await {
            Ok(applied) if applied.status().is_success() => {
                message = "The draft is valid and was applied: it is in force now.".to_owned();
                let name = checked.name.as_deref().unwrap_or("-");
                audit_console(
                    &state,
                    &session.operator,
                    "console.policy_apply",
                    format!(
                        "operator `{}` applied policy `{name}` from the console",
                        session.operator
                    ),
                )
                .await;
            }
            Ok(applied) => {
                message = format!("Not applied: the gateway answered {}", applied.status());
            }
            Err(err) => message = format!("Not applied: {err}"),
        }
    }
    let pending = pending_count(&state).await;
    let mut response = render(
        "policy_result.html",
        context! {
            ..frame(&session, "policies", "Draft policy", pending),
            ..context! {
                heading => "Draft policy",
                errors => errors,
                warnings => warnings,
                message => message,
                source => form.source,
            }
        },
    );
    if !valid {
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    response
}

/// `GET /console/audit/event/{id}`: one event with its place in its chain.
async fn event_page(
    State(state): State<AppState>,
    Operator(session): Operator,
    Path(id): Path<String>,
) -> Response {
    state.audit.settled().await;
    let event = match state.store.audit_event(&id).await {
        Ok(event) => event,
        Err(err) => return crate::error::ApiError::from(err).into_response(),
    };
    let json = serde_json::to_value(&event).unwrap_or_default();
    let fields: Vec<(String, String)> = json
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(k, v)| {
                    let text = match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => serde_json::to_string_pretty(other).unwrap_or_default(),
                    };
                    (k.clone(), text)
                })
                .collect()
        })
        .unwrap_or_default();
    let pending = pending_count(&state).await;
    let ctx = context! {
        ..frame(&session, "audit", "Audit event", pending),
        ..context! {
            id => id,
            trace => event.event.trace_id.clone().unwrap_or_default(),
            fields => fields,
        }
    };
    render("event.html", ctx)
}

/// `GET /console/audit/verify`: recomputes every chain (as `meshguard audit verify`) and shows
/// what it found.
async fn verify_page(State(state): State<AppState>, Operator(session): Operator) -> Response {
    state.audit.settled().await;
    let options = meshguard_store::VerifyOptions::full(state.audit_keys.accepted.clone());
    let report = match state.store.verify_audit(&options).await {
        Ok(report) => report,
        Err(err) => return crate::error::ApiError::from(err).into_response(),
    };
    state.console.verified(report.ok, report.events_checked);
    let chains: Vec<(String, String)> = report
        .chains
        .iter()
        .map(|c| {
            (
                c.gateway.clone(),
                format!(
                    "seq {} to {}{}",
                    c.anchor_seq + 1,
                    c.head_seq,
                    if c.anchor_seq > 0 {
                        " (older events removed by retention)"
                    } else {
                        ""
                    }
                ),
            )
        })
        .collect();
    let broken = report
        .first_break()
        .map(|b| format!("gateway {} at seq {}: {}", b.gateway, b.seq, b.reason));
    let pending = pending_count(&state).await;
    let message = if report.ok {
        format!(
            "Every chain verifies: {} events recomputed.",
            report.events_checked
        )
    } else {
        "The audit trail does not verify: an event was altered, removed or inserted.".to_owned()
    };
    render(
        "policy_result.html",
        context! {
            ..frame(&session, "audit", "Audit chain", pending),
            ..context! {
                heading => "Audit chain",
                message => message,
                errors_title => "First break",
                warnings_title => "Chains",
                errors => broken.into_iter().collect::<Vec<_>>(),
                warnings => chains.iter().map(|(g, r)| format!("{g}: {r}")).collect::<Vec<_>>(),
            }
        },
    )
}

/// The checks-per-minute chart, drawn by the server as inline SVG.
mod chart {
    use meshguard_policy::Effect;
    use meshguard_store::AuditEvent;
    use time::OffsetDateTime;

    const WIDTH: u32 = 720;
    const HEIGHT: u32 = 160;
    const MINUTES: usize = 60;

    /// Stacked bars of allow / deny / approval per minute of the hour before `now`.
    pub fn per_minute(events: &[AuditEvent], now: OffsetDateTime) -> String {
        let mut buckets = [[0u32; 3]; MINUTES];
        for event in events {
            let age = (now - event.event.ts).whole_minutes();
            let Ok(age) = usize::try_from(age) else {
                continue;
            };
            let Some(slot) = MINUTES
                .checked_sub(age + 1)
                .and_then(|i| buckets.get_mut(i))
            else {
                continue;
            };
            let index = match event.event.decision {
                Some(Effect::Allow) => 0,
                Some(Effect::Deny) => 1,
                Some(Effect::RequireApproval) => 2,
                None => continue,
            };
            if let Some(count) = slot.get_mut(index) {
                *count += 1;
            }
        }
        let top = buckets
            .iter()
            .map(|b| b.iter().sum::<u32>())
            .max()
            .unwrap_or(0)
            .max(1);
        let plot = HEIGHT - 20;
        let bar = WIDTH / u32::try_from(MINUTES).unwrap_or(60);
        let mut svg = format!(
            "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"Checks per minute over the last hour: allowed, denied and sent for approval\">"
        );
        for (i, counts) in buckets.iter().enumerate() {
            let x = u32::try_from(i).unwrap_or(0) * bar;
            let mut y = plot;
            for (count, class) in counts.iter().zip(["allow", "deny", "approval"]) {
                if *count == 0 {
                    continue;
                }
                let h = (count * plot / top).max(1);
                y = y.saturating_sub(h);
                svg.push_str(&format!(
                    "<rect class=\"{class}\" x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{h}\"><title>{count} {class}</title></rect>",
                    bar.saturating_sub(2)
                ));
            }
        }
        svg.push_str(&format!(
            "<text x=\"0\" y=\"{}\">60 min ago</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">now · peak {top}/min</text></svg>",
            HEIGHT - 4,
            WIDTH,
            HEIGHT - 4
        ));
        svg
    }
}
