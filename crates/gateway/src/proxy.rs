//! The reverse proxy's own view of a request (`ANY /proxy/{path…}`): its upstreams (the default
//! `proxy.target` and the named `[targets.NAME]`, each with the credentials it injects and the
//! request headers it forwards), and the one canonical reading of a request path that both
//! decides and routes, so that what is forwarded is exactly what was decided.
//!
//! A path is read once: percent-escapes are decoded once, repeated `/` collapse, and anything
//! that could be read two ways (a `.` or `..` segment, an encoded dot, slash, backslash or `%`, a
//! backslash) is refused before any target is chosen; so is a decoded path that the policy
//! engine would read as another (its canonical form, `meshguard_policy::canonical_resource`, is
//! the one judge: control characters, text NFKC changes, a segment ending in a dot). The canonical path then names the action, picks the target and
//! is what the upstream receives (re-encoded).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::config::ProxyTarget;

/// Request headers forwarded when a target lists none (`forward_headers`): content negotiation,
/// the body's description, conditional and range requests, caching and tracing. Everything else
/// stays at the gateway.
pub const DEFAULT_FORWARD_HEADERS: &[&str] = &[
    "accept",
    "accept-encoding",
    "accept-language",
    "cache-control",
    "content-encoding",
    "content-language",
    "content-length",
    "content-type",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "range",
    "traceparent",
    "tracestate",
    "user-agent",
    "x-request-id",
];

/// Request headers no target may forward: they would let the agent change what the upstream
/// believes about the method, the path, the client or its credentials (the agent's own
/// credentials never reach an upstream; the target's do), or they belong to the hop or to
/// MeshGuard itself.
const NEVER_FORWARDED: &[&str] = &[
    "authorization",
    "connection",
    "cookie",
    "forwarded",
    "host",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-admin-token",
    "x-approval-id",
    "x-http-method",
    "x-http-method-override",
    "x-method-override",
    "x-original-url",
    "x-real-ip",
    "x-rewrite-url",
];

/// Prefixes of request headers no target may forward (`X-Forwarded-For`, `X-MeshGuard-Action`…).
const NEVER_FORWARDED_PREFIXES: &[&str] = &["x-forwarded-", "x-meshguard-"];

/// Whether no configuration may forward this request header.
fn never_forwarded(name: &str) -> bool {
    NEVER_FORWARDED.contains(&name) || NEVER_FORWARDED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Injected values shorter than this are matched only whole in response headers: a shorter
/// part (`Bearer`, `token`) is a scheme, not a secret.
const MIN_SECRET_PART: usize = 8;

/// The values a target injects, kept to recognise them in the upstream's answer; never printed.
#[derive(Clone, Default)]
struct Credentials(Vec<Vec<u8>>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({} values)", self.0.len())
    }
}

impl Credentials {
    /// Each injected value whole, and each of its space-separated parts long enough to be the
    /// secret itself (`Bearer abc…` also yields `abc…`).
    fn of(headers: &[(HeaderName, HeaderValue)]) -> Credentials {
        let mut values = BTreeSet::new();
        for (_, value) in headers {
            let bytes = value.as_bytes();
            if !bytes.is_empty() {
                values.insert(bytes.to_ascii_lowercase());
            }
            for part in bytes.split(u8::is_ascii_whitespace) {
                if part.len() >= MIN_SECRET_PART {
                    values.insert(part.to_ascii_lowercase());
                }
            }
        }
        Credentials(values.into_iter().collect())
    }

    /// Whether `value` holds one of the injected values (ASCII case ignored).
    fn found_in(&self, value: &HeaderValue) -> bool {
        let haystack = value.as_bytes().to_ascii_lowercase();
        self.0.iter().any(|needle| {
            haystack
                .windows(needle.len())
                .any(|window| window == needle.as_slice())
        })
    }
}

/// One upstream: where requests go, what credentials they get and which headers they receive.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Base URL without a trailing `/`.
    pub base: String,
    /// Headers set on every forwarded request (the target's credentials).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The agent's request headers that are forwarded (lower case); all others stay here.
    forward: HashSet<HeaderName>,
    credentials: Credentials,
    /// The pooled client that reaches this upstream (plain HTTP, or HTTPS verified against the
    /// system's roots and the target's `ca_file`).
    pub client: UpstreamClient,
}

/// An HTTP(S) client of the reverse proxy.
pub type UpstreamClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// A client that verifies `https://` upstreams against the system's roots and, when given, the
/// PEM certificates of `ca_file`.
fn client(key: &str, ca_file: Option<&std::path::Path>) -> Result<UpstreamClient, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(file) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| format!("{key}.ca_file: {}: {e}", file.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "{key}.ca_file: {}: no PEM certificate in the file",
                file.display()
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("{key}.ca_file: {}: {e}", file.display()))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{key}: TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

impl Upstream {
    /// Whether the agent's request header `name` goes upstream.
    pub fn forwards(&self, name: &HeaderName) -> bool {
        self.forward.contains(name)
    }

    /// Whether an answer header would hand the agent one of the injected credentials.
    pub fn leaks(&self, value: &HeaderValue) -> bool {
        self.credentials.found_in(value)
    }
}

/// Every upstream of this gateway and the client that reaches them.
#[derive(Clone, Default)]
pub struct Upstreams {
    default: Option<Upstream>,
    named: BTreeMap<String, Upstream>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("default", &self.default.as_ref().map(|u| &u.base))
            .field("named", &self.named.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The forwarded request headers of a target: its `forward_headers`, else the default list.
fn forward_list(key: &str, listed: Option<&[String]>) -> Result<HashSet<HeaderName>, String> {
    let names: Vec<&str> = match listed {
        Some(listed) => listed.iter().map(String::as_str).collect(),
        None => DEFAULT_FORWARD_HEADERS.to_vec(),
    };
    names
        .into_iter()
        .map(|name| {
            let header = HeaderName::try_from(name.trim())
                .map_err(|_| format!("{key}.forward_headers: `{name}` is not a header name"))?;
            if never_forwarded(header.as_str()) {
                return Err(format!(
                    "{key}.forward_headers: `{name}` is never forwarded: it would let an agent \
                     change the method, path, client or credentials the upstream sees"
                ));
            }
            Ok(header)
        })
        .collect()
}

fn upstream(key: &str, target: &ProxyTarget) -> Result<Upstream, String> {
    let url = &target.url;
    let base = url.trim_end_matches('/');
    if !base.starts_with("http://") && !base.starts_with("https://") {
        return Err(format!(
            "{key}: `{url}` is not supported: an upstream is an `http://` or `https://` URL"
        ));
    }
    base.parse::<axum::http::Uri>()
        .map_err(|e| format!("{key}: `{url}` is not a URL: {e}"))?;
    let headers: Vec<(HeaderName, HeaderValue)> = target
        .headers
        .iter()
        .map(|(name, value)| {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|_| format!("{key}.headers: `{name}` is not a header name"))?;
            let mut value = HeaderValue::from_str(value.expose())
                .map_err(|_| format!("{key}.headers.{name}: not a valid header value"))?;
            value.set_sensitive(true);
            Ok((name, value))
        })
        .collect::<Result<_, String>>()?;
    Ok(Upstream {
        base: base.to_owned(),
        forward: forward_list(key, target.forward_headers.as_deref())?,
        credentials: Credentials::of(&headers),
        headers,
        client: client(key, target.ca_file.as_deref())?,
    })
}

/// Where a canonical path goes: the upstream, the object of the action, and the path to request.
#[derive(Debug)]
pub struct Routed<'u> {
    /// The upstream chosen by the canonical path.
    pub upstream: &'u Upstream,
    /// The canonical, decoded path after `/proxy/` (target name included): the action's object.
    pub object: String,
    /// The path requested from the upstream (after its base URL), re-encoded, starting with `/`.
    pub forward: String,
}

impl Upstreams {
    /// Builds the upstreams from the config: the default `proxy.target` (its URL and
    /// `proxy.forward_headers`) and the named targets. A bad URL or header fails the start.
    pub fn from_config(
        default: Option<&ProxyTarget>,
        targets: &BTreeMap<String, ProxyTarget>,
    ) -> Result<Upstreams, String> {
        let default = default
            .map(|target| upstream("proxy.target", target))
            .transpose()?;
        let named = targets
            .iter()
            .map(|(name, target)| {
                upstream(&format!("targets.{name}"), target).map(|u| (name.clone(), u))
            })
            .collect::<Result<_, String>>()?;
        Ok(Upstreams { default, named })
    }

    /// The upstream of a canonical path: a named target when the first segment names one (the
    /// rest of the path goes upstream), else the default target with the whole path.
    pub fn resolve(&self, path: &ProxyPath) -> Option<Routed<'_>> {
        let named = path
            .segments
            .split_first()
            .and_then(|(first, rest)| self.named.get(first).map(|u| (u, rest)));
        let (upstream, forwarded) = match named {
            Some((upstream, rest)) => (upstream, rest),
            None => (self.default.as_ref()?, path.segments.as_slice()),
        };
        let mut forward = String::new();
        for segment in forwarded {
            forward.push('/');
            forward.extend(utf8_percent_encode(segment, SEGMENT));
        }
        if path.trailing_slash || forward.is_empty() {
            forward.push('/');
        }
        Some(Routed {
            upstream,
            object: path.segments.join("/"),
            forward,
        })
    }
}

/// What stays percent-encoded in a forwarded path segment: everything but the unreserved
/// characters, the sub-delimiters, `:` and `@` (RFC 3986 `pchar`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// Why a proxied path is refused before it is routed: each is a way to make the gateway and the
/// upstream read one path as two different ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathRefusal {
    /// `.` or `..` (also `..;x`): the proxy never resolves dot segments, and upstreams differ in
    /// how they do.
    #[error("it has a `.` or `..` segment (`{0}`)")]
    DotSegment(String),
    /// `%2e`: a dot written so that it would become a dot segment after decoding.
    #[error("it has an encoded dot (`%2e`)")]
    EncodedDot,
    /// `%2f` or `%5c`: a separator hidden from the gateway that an upstream may decode.
    #[error("it has an encoded slash or backslash (`{0}`)")]
    EncodedSeparator(String),
    /// `%25`: a `%` that a second decoding would turn into another escape.
    #[error("it has an encoded `%` (`%25`), which would need a second decoding")]
    EncodedPercent,
    /// `%` not followed by two hexadecimal digits.
    #[error("`{0}` is not a percent-escape (`%` must be followed by two hexadecimal digits)")]
    BadEscape(String),
    /// A literal `\`, which some upstreams read as `/`.
    #[error("it has a backslash")]
    Backslash,
    /// Escapes that do not decode to UTF-8 text.
    #[error("its percent-escapes do not decode to UTF-8 text")]
    NotUtf8,
    /// The decoded path has no canonical form (a control character, say).
    #[error("the decoded path {}", .0.describe())]
    NotCanonical(meshguard_policy::Fault),
    /// The policy engine reads the decoded path as another one (fullwidth dots, a segment
    /// ending in `.`): the upstream would be sent a path other than the one decided.
    #[error("the policy engine reads it as `{0}`")]
    Respelled(String),
}

/// A proxied path in its one canonical form: decoded once, no empty segment, nothing ambiguous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPath {
    segments: Vec<String>,
    trailing_slash: bool,
}

impl ProxyPath {
    /// The decoded segments joined by `/`: the object of the action the path is checked as.
    pub fn object(&self) -> String {
        self.segments.join("/")
    }
}

impl ProxyPath {
    /// Reads the raw (still percent-encoded) path after `/proxy/`.
    pub fn parse(raw: &str) -> Result<ProxyPath, PathRefusal> {
        if raw.contains('\\') {
            return Err(PathRefusal::Backslash);
        }
        let mut segments = Vec::new();
        for raw_segment in raw.split('/').filter(|s| !s.is_empty()) {
            let segment = decode(raw_segment)?;
            let name = segment.split(';').next().unwrap_or_default();
            if name == "." || name == ".." {
                return Err(PathRefusal::DotSegment(raw_segment.to_owned()));
            }
            segments.push(segment);
        }
        // What is decided is the engine's canonical form of this path: it must be this path.
        let joined = segments.join("/");
        match meshguard_policy::canonical_resource(&joined) {
            Ok(canonical) if canonical == joined.as_str() => {}
            Ok(canonical) => return Err(PathRefusal::Respelled(canonical.into_owned())),
            Err(refusal) => return Err(PathRefusal::NotCanonical(refusal.fault)),
        }
        Ok(ProxyPath {
            trailing_slash: raw.ends_with('/') && !segments.is_empty(),
            segments,
        })
    }
}

/// Decodes the percent-escapes of one segment, once, refusing the escapes that hide a dot, a
/// separator or another escape.
fn decode(segment: &str) -> Result<String, PathRefusal> {
    let bytes = segment.as_bytes();
    let mut position = 0;
    while let Some(offset) = bytes
        .get(position..)
        .and_then(|rest| rest.iter().position(|&b| b == b'%'))
    {
        let start = position + offset;
        let escape = bytes
            .get(start..bytes.len().min(start + 3))
            .unwrap_or_default();
        let hex = escape.get(1..).unwrap_or_default();
        if hex.len() != 2 || !hex.iter().all(u8::is_ascii_hexdigit) {
            let shown = String::from_utf8_lossy(escape).into_owned();
            return Err(PathRefusal::BadEscape(shown));
        }
        match hex.to_ascii_lowercase().as_slice() {
            b"2e" => return Err(PathRefusal::EncodedDot),
            b"2f" | b"5c" => {
                let shown = String::from_utf8_lossy(escape).into_owned();
                return Err(PathRefusal::EncodedSeparator(shown));
            }
            b"25" => return Err(PathRefusal::EncodedPercent),
            _ => {}
        }
        position = start + 3;
    }
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| PathRefusal::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use meshguard_policy::Fault;

    fn target(url: &str, headers: &[(&str, &str)]) -> ProxyTarget {
        ProxyTarget {
            url: url.into(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Secret::new(*v)))
                .collect(),
            forward_headers: None,
            ca_file: None,
        }
    }

    fn route(up: &Upstreams, raw: &str) -> (String, String, String) {
        let path = ProxyPath::parse(raw).unwrap();
        let routed = up.resolve(&path).unwrap();
        (routed.upstream.base.clone(), routed.object, routed.forward)
    }

    #[test]
    fn named_targets_take_their_first_segment_and_the_default_takes_the_rest() {
        let targets = BTreeMap::from([("github".to_owned(), target("http://127.0.0.1:9/", &[]))]);
        let default = target("http://127.0.0.1:8", &[]);
        let up = Upstreams::from_config(Some(&default), &targets).unwrap();
        assert_eq!(
            route(&up, "github/repos/x"),
            (
                "http://127.0.0.1:9".into(),
                "github/repos/x".into(),
                "/repos/x".into()
            )
        );
        assert_eq!(
            route(&up, "api/users"),
            (
                "http://127.0.0.1:8".into(),
                "api/users".into(),
                "/api/users".into()
            )
        );
        let none = Upstreams::from_config(None, &BTreeMap::new()).unwrap();
        assert!(
            none.resolve(&ProxyPath::parse("api/users").unwrap())
                .is_none()
        );
        // https:// is accepted; any other scheme is not.
        let https = target("https://example.com", &[]);
        assert!(Upstreams::from_config(Some(&https), &BTreeMap::new()).is_ok());
        let ftp = target("ftp://example.com", &[]);
        let refused = Upstreams::from_config(Some(&ftp), &BTreeMap::new()).unwrap_err();
        assert!(refused.contains("`http://` or `https://`"), "{refused}");
        let mut unreadable = target("https://example.com", &[]);
        unreadable.ca_file = Some("/nonexistent/ca.pem".into());
        let refused = Upstreams::from_config(Some(&unreadable), &BTreeMap::new()).unwrap_err();
        assert!(refused.contains("proxy.target.ca_file"), "{refused}");
    }

    #[test]
    fn one_canonical_path_names_the_action_picks_the_target_and_is_forwarded() {
        let targets = BTreeMap::from([("github".to_owned(), target("http://127.0.0.1:9", &[]))]);
        let up = Upstreams::from_config(None, &targets).unwrap();
        // Repeated slashes collapse before the target is chosen; escapes are decoded once and
        // re-encoded for the upstream; one trailing slash is kept on the wire only.
        assert_eq!(
            route(&up, "//github///repos/%61cme%20x/"),
            (
                "http://127.0.0.1:9".into(),
                "github/repos/acme x".into(),
                "/repos/acme%20x/".into()
            )
        );
        assert_eq!(route(&up, "%67ithub/x").1, "github/x");
        assert_eq!(route(&up, "github").2, "/");
    }

    #[test]
    fn ambiguous_paths_are_refused_before_routing() {
        let control = PathRefusal::NotCanonical(Fault::ControlCharacter);
        let refused = [
            ("github/../api/users", PathRefusal::DotSegment("..".into())),
            ("./api", PathRefusal::DotSegment(".".into())),
            ("github/..;/api", PathRefusal::DotSegment("..;".into())),
            ("github/%2e%2e/api", PathRefusal::EncodedDot),
            ("github/.%2E/api", PathRefusal::EncodedDot),
            ("github/a%2fb", PathRefusal::EncodedSeparator("%2f".into())),
            ("github/a%5Cb", PathRefusal::EncodedSeparator("%5C".into())),
            ("github/a\\b", PathRefusal::Backslash),
            ("github/%252e%252e", PathRefusal::EncodedPercent),
            ("github/a%00b", control.clone()),
            ("github/a%0d%0ab", control.clone()),
            ("github/a%1bb", control.clone()),
            ("github/a%5c", PathRefusal::EncodedSeparator("%5c".into())),
            (
                "github/secret./x",
                PathRefusal::Respelled("github/secret/x".into()),
            ),
            ("github/a%zz", PathRefusal::BadEscape("%zz".into())),
            ("github/a%2", PathRefusal::BadEscape("%2".into())),
            ("github/%ff", PathRefusal::NotUtf8),
            (
                "github/%EF%BC%8E%EF%BC%8E/api",
                PathRefusal::Respelled("api".into()),
            ),
            ("github/\u{2025}/api", PathRefusal::Respelled("api".into())),
            (
                "\u{2025}/api",
                PathRefusal::NotCanonical(Fault::EscapesRoot),
            ),
        ];
        for (raw, expected) in refused {
            assert_eq!(ProxyPath::parse(raw), Err(expected), "{raw}");
        }
    }

    #[test]
    fn forwarded_headers_are_an_allow_list_that_can_never_include_spoofing_headers() {
        let default = target("http://127.0.0.1:8", &[]);
        let up = Upstreams::from_config(Some(&default), &BTreeMap::new()).unwrap();
        let upstream = up.default.as_ref().unwrap();
        assert!(upstream.forwards(&HeaderName::from_static("content-type")));
        for name in [
            "cookie",
            "x-forwarded-for",
            "x-http-method-override",
            "x-custom",
        ] {
            assert!(!upstream.forwards(&HeaderName::from_static(name)), "{name}");
        }
        let mut listed = target("http://127.0.0.1:8", &[]);
        listed.forward_headers = Some(vec!["X-GitHub-Api-Version".into()]);
        let up = Upstreams::from_config(Some(&listed), &BTreeMap::new()).unwrap();
        let upstream = up.default.as_ref().unwrap();
        assert!(upstream.forwards(&HeaderName::from_static("x-github-api-version")));
        assert!(!upstream.forwards(&HeaderName::from_static("accept")));
        for refused in [
            "Cookie",
            "X-Forwarded-Host",
            "x-meshguard-action",
            "Forwarded",
        ] {
            listed.forward_headers = Some(vec![refused.into()]);
            let err = Upstreams::from_config(Some(&listed), &BTreeMap::new()).unwrap_err();
            assert!(err.contains("is never forwarded"), "{refused}: {err}");
        }
    }

    #[test]
    fn injected_credentials_are_recognised_whole_or_without_their_scheme() {
        let targets = BTreeMap::from([(
            "gh".to_owned(),
            target(
                "http://127.0.0.1:9",
                &[("authorization", "Bearer s3cr3t-t0ken")],
            ),
        )]);
        let up = Upstreams::from_config(None, &targets).unwrap();
        let gh = up.named.get("gh").unwrap();
        for echoed in [
            "Bearer s3cr3t-t0ken",
            "x=S3CR3T-T0KEN;",
            "token s3cr3t-t0ken",
        ] {
            assert!(gh.leaks(&HeaderValue::from_static(echoed)), "{echoed}");
        }
        for harmless in ["Bearer realm=api", "application/json"] {
            assert!(!gh.leaks(&HeaderValue::from_static(harmless)), "{harmless}");
        }
        assert!(!format!("{gh:?}").contains("s3cr3t"));
    }
}
