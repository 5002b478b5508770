//! The admin API client: one place that knows the base URL, the admin token, the timeouts, and how
//! the gateway's answers map to [`CliError`]s.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde_json::Value;

use crate::error::CliError;

/// How long to wait for a TCP connection before calling the gateway unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for one ordinary admin request; streams (`--follow`, `export`) have none.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest page the gateway serves: listings are read in pages of this size.
const MAX_PAGE_SIZE: usize = 1000;

/// Rows read from a paged listing, and where the rest starts when reading stopped early.
#[derive(Debug, Default)]
pub struct Listed {
    /// The rows, in the listing's order.
    pub rows: Vec<Value>,
    /// The `nextCursor` to pass to read on; `None` when the listing was read to its end.
    pub next_cursor: Option<String>,
}

/// Installs the TLS crypto provider every reqwest client of the binary needs: reqwest is built
/// without a bundled one so that the binary carries only ring. Installing fails only when one is
/// already installed, which is just as good.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A connection to one gateway's admin API.
pub struct AdminClient {
    base: Url,
    token: String,
    http: reqwest::Client,
    streaming: reqwest::Client,
}

impl std::fmt::Debug for AdminClient {
    // The admin token must never end up in a log or an error message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl AdminClient {
    /// Builds a client for `url`, authenticated with `token`.
    pub fn new(
        url: &str,
        token: String,
        ca_file: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let base = Url::parse(url)
            .map_err(|e| CliError::Usage(format!("--url `{url}` is not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(CliError::Usage(format!(
                "--url `{url}` must start with http:// or https://"
            ))
            .into());
        }
        install_crypto();
        let user_agent = concat!("meshguard-cli/", env!("CARGO_PKG_VERSION"));
        let ca = match ca_file {
            Some(file) => {
                let pem = std::fs::read(file)
                    .with_context(|| format!("--ca-file {}: cannot read it", file.display()))?;
                if !meshguard_mcp::gateway::pem_holds_a_certificate(&pem) {
                    return Err(CliError::Usage(format!(
                        "--ca-file {}: no PEM certificate in the file",
                        file.display()
                    ))
                    .into());
                }
                Some(reqwest::Certificate::from_pem(&pem).map_err(|e| {
                    CliError::Usage(format!(
                        "--ca-file {}: not a PEM certificate: {e}",
                        file.display()
                    ))
                })?)
            }
            None => None,
        };
        let builder = || {
            let builder = reqwest::Client::builder()
                .user_agent(user_agent)
                .connect_timeout(CONNECT_TIMEOUT);
            match &ca {
                Some(ca) => builder.add_root_certificate(ca.clone()),
                None => builder,
            }
        };
        let http = builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("cannot set up the HTTP client")?;
        let streaming = builder().build().context("cannot set up the HTTP client")?;
        Ok(AdminClient {
            base,
            token,
            http,
            streaming,
        })
    }

    /// The URL of `segments` under the base URL, each segment percent-encoded (agent and policy
    /// names are user input).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn request(
        &self,
        client: &reqwest::Client,
        method: Method,
        segments: &[&str],
    ) -> RequestBuilder {
        client
            .request(method, self.url(segments))
            .header("X-Admin-Token", &self.token)
    }

    /// Sends `req` and turns transport failures and error statuses into [`CliError`]s.
    async fn send(&self, req: RequestBuilder) -> anyhow::Result<Response> {
        let response = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        Err(status_error(status, &body).into())
    }

    /// Maps a reqwest failure to "unreachable" (exit 5) when no answer came back.
    pub fn transport_error(&self, err: &reqwest::Error) -> anyhow::Error {
        if err.is_connect() || err.is_timeout() || err.is_request() {
            CliError::Unreachable {
                url: self.base.as_str().trim_end_matches('/').to_owned(),
            }
            .into()
        } else {
            anyhow::anyhow!("talking to the gateway at {} failed: {err}", self.base)
        }
    }

    /// `GET` a JSON document.
    pub async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> anyhow::Result<Value> {
        let req = self.request(&self.http, Method::GET, segments).query(query);
        json_body(self.send(req).await?).await
    }

    /// Reads a paged listing (rows under `key`, `nextCursor` beside them) from `cursor` on,
    /// following cursors to the end, or until `cap` rows when given.
    pub async fn list(
        &self,
        segments: &[&str],
        filters: &[(&str, String)],
        key: &str,
        mut cursor: Option<String>,
        cap: Option<usize>,
    ) -> anyhow::Result<Listed> {
        let mut rows = Vec::new();
        loop {
            let wanted = cap.map_or(MAX_PAGE_SIZE, |cap| {
                cap.saturating_sub(rows.len()).min(MAX_PAGE_SIZE)
            });
            if wanted == 0 {
                return Ok(Listed {
                    rows,
                    next_cursor: cursor,
                });
            }
            let mut query = filters.to_vec();
            query.push(("limit", wanted.to_string()));
            if let Some(cursor) = &cursor {
                query.push(("cursor", cursor.clone()));
            }
            let page = self.get(segments, &query).await?;
            if let Some(listed) = page.get(key).and_then(Value::as_array) {
                rows.extend(listed.iter().cloned());
            }
            let next = page
                .get("nextCursor")
                .and_then(Value::as_str)
                .map(str::to_owned);
            match next {
                None => {
                    return Ok(Listed {
                        rows,
                        next_cursor: None,
                    });
                }
                // A gateway that answers with the cursor it was given would never end.
                Some(next) if cursor.as_deref() == Some(next.as_str()) => {
                    anyhow::bail!(
                        "the gateway at {} repeated the cursor `{next}` of {}",
                        self.base,
                        segments.join("/")
                    );
                }
                Some(next) => cursor = Some(next),
            }
        }
    }

    /// Every row of a paged listing (rows under `key`), however many pages it takes.
    pub async fn list_all(
        &self,
        segments: &[&str],
        filters: &[(&str, String)],
        key: &str,
    ) -> anyhow::Result<Vec<Value>> {
        Ok(self.list(segments, filters, key, None, None).await?.rows)
    }

    /// Sends a JSON body (or none) with `method` and reads the JSON answer (`null` when empty).
    pub async fn send_json(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.request(&self.http, method, segments).query(query);
        if let Some(body) = body {
            req = req.json(body);
        }
        json_body(self.send(req).await?).await
    }

    /// `POST`s a JSON body whose answer may take minutes (a replay over months of audit events):
    /// no request timeout, only the connect timeout.
    pub async fn post_json_unbounded(
        &self,
        segments: &[&str],
        body: &Value,
    ) -> anyhow::Result<Value> {
        let req = self
            .request(&self.streaming, Method::POST, segments)
            .json(body);
        json_body(self.send(req).await?).await
    }

    /// `PUT`s a policy document as YAML, exactly as written in its file.
    pub async fn put_yaml(&self, segments: &[&str], yaml: String) -> anyhow::Result<Value> {
        let req = self
            .request(&self.http, Method::PUT, segments)
            .header(reqwest::header::CONTENT_TYPE, "application/yaml")
            .body(yaml);
        json_body(self.send(req).await?).await
    }

    /// Opens a long-lived `GET` (SSE, JSON lines) whose body the caller streams.
    pub async fn open_stream(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        accept: &str,
    ) -> anyhow::Result<Response> {
        let req = self
            .request(&self.streaming, Method::GET, segments)
            .query(query)
            .header(reqwest::header::ACCEPT, accept);
        self.send(req).await
    }
}

async fn json_body(response: Response) -> anyhow::Result<Value> {
    let bytes = response
        .bytes()
        .await
        .context("the gateway's answer was cut short")?;
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    parse_value(&bytes).context("the gateway's answer is not JSON")
}

/// Parses a JSON document of any depth. The audit trail may hold an event stored before the
/// gateway capped nesting, and serde_json's default limit (128 levels) would make every listing
/// that includes it fail; the stack grows on the heap instead.
pub fn parse_value(bytes: &[u8]) -> serde_json::Result<Value> {
    use serde::Deserialize as _;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let value = Value::deserialize(serde_stacker::Deserializer::new(&mut de))?;
    de.end()?;
    Ok(value)
}

/// The message of a gateway error body (`{"error": …, "message": …}`), else the body, else the
/// status text.
fn error_message(status: StatusCode, body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let from_json = parsed.as_ref().and_then(|v| {
        v.get("message")
            .and_then(Value::as_str)
            .or_else(|| v.get("error").and_then(Value::as_str))
            .map(str::to_owned)
    });
    from_json
        .or_else(|| Some(body.trim().to_owned()).filter(|b| !b.is_empty() && b.len() < 500))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_lowercase())
}

/// Turns an error status into the error a user sees.
pub fn status_error(status: StatusCode, body: &str) -> CliError {
    let message = error_message(status, body);
    if status == StatusCode::UNAUTHORIZED {
        CliError::Auth(format!("the gateway refused the admin token ({message})"))
    } else {
        CliError::Api {
            status: status.as_u16(),
            message: format!("the gateway answered {}: {message}", status.as_u16()),
        }
    }
}

/// Reads `--admin-token-file`: the token is the file's text without its trailing newline (or
/// surrounding whitespace); an unreadable or empty file is an error naming the file.
pub fn read_admin_token_file(path: &Path) -> Result<String, CliError> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Ok(_) => Err(CliError::Auth(format!(
            "the admin token file `{}` (--admin-token-file) is empty",
            path.display()
        ))),
        Err(e) => Err(CliError::Auth(format!(
            "cannot read the admin token file `{}` (--admin-token-file): {e}",
            path.display()
        ))),
    }
}

/// The admin token: `--admin-token` / `MESHGUARD_ADMIN_TOKEN` (or `--admin-token-file`), else
/// `<data-dir>/admin.token`.
pub fn resolve_admin_token(given: Option<&str>, data_dir: &Path) -> Result<String, CliError> {
    if let Some(token) = given.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(token.to_owned());
    }
    let path = data_dir.join("admin.token");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Ok(_) => Err(CliError::Auth(format!(
            "the admin token file `{}` is empty",
            path.display()
        ))),
        Err(e) => Err(CliError::Auth(format!(
            "no admin token: pass --admin-token, set MESHGUARD_ADMIN_TOKEN, or point --data-dir at the gateway's data dir (cannot read `{}`: {e})",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_percent_encoded_in_paths() {
        let client = AdminClient::new("http://127.0.0.1:3100/", "t".into(), None).unwrap();
        assert_eq!(
            client.url(&["admin", "agents", "a/b c"]).as_str(),
            "http://127.0.0.1:3100/admin/agents/a%2Fb%20c"
        );
        let prefixed = AdminClient::new("http://127.0.0.1:3100/mg", "t".into(), None).unwrap();
        assert_eq!(
            prefixed.url(&["admin", "policies"]).as_str(),
            "http://127.0.0.1:3100/mg/admin/policies"
        );
    }

    #[test]
    fn bad_urls_are_usage_errors() {
        let err = AdminClient::new("localhost:3100", "t".into(), None).unwrap_err();
        assert_eq!(
            err.downcast_ref::<CliError>().map(CliError::exit_code),
            Some(2)
        );
        assert!(AdminClient::new("not a url", "t".into(), None).is_err());
    }

    #[test]
    fn unauthorized_is_an_auth_error_with_the_gateway_message() {
        let err = status_error(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"unauthorized","message":"bad admin token"}"#,
        );
        assert_eq!(err.exit_code(), 3);
        assert_eq!(
            err.to_string(),
            "the gateway refused the admin token (bad admin token)"
        );
        let err = status_error(StatusCode::NOT_FOUND, "");
        assert_eq!(err.exit_code(), 1);
        assert_eq!(err.to_string(), "the gateway answered 404: not found");
    }

    #[test]
    fn admin_token_falls_back_to_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            resolve_admin_token(Some(" given "), dir.path()).unwrap(),
            "given"
        );
        assert_eq!(
            resolve_admin_token(None, dir.path())
                .unwrap_err()
                .exit_code(),
            3
        );
        std::fs::write(dir.path().join("admin.token"), "secret\n").unwrap();
        assert_eq!(resolve_admin_token(None, dir.path()).unwrap(), "secret");
    }

    #[test]
    fn deep_documents_parse() {
        let deep = format!("{}1{}", "[".repeat(2000), "]".repeat(2000));
        assert!(serde_json::from_str::<Value>(&deep).is_err());
        assert!(parse_value(deep.as_bytes()).is_ok());
        assert!(parse_value(b"{} x").is_err());
    }
}
