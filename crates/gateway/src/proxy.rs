//! Upstreams of the reverse proxy (`ANY /proxy/{path…}`): the default `proxy.target` and the
//! named `[targets.NAME]`, each with the headers injected into forwarded requests.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::ProxyTarget;

/// One upstream: where requests go and what credentials they get.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Base URL without a trailing `/`.
    pub base: String,
    /// Headers set on every forwarded request (the target's credentials).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Every upstream of this gateway and the client that reaches them.
#[derive(Clone)]
pub struct Upstreams {
    default: Option<Upstream>,
    named: BTreeMap<String, Upstream>,
    /// The HTTP client, pooled.
    pub client: Client<HttpConnector, Body>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("default", &self.default.as_ref().map(|u| &u.base))
            .field("named", &self.named.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for Upstreams {
    fn default() -> Self {
        Upstreams {
            default: None,
            named: BTreeMap::new(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

fn upstream(
    key: &str,
    url: &str,
    headers: &BTreeMap<String, crate::config::Secret>,
) -> Result<Upstream, String> {
    let base = url.trim_end_matches('/');
    if !base.starts_with("http://") {
        return Err(format!(
            "{key}: `{url}` is not supported: this build forwards to plain `http://` upstreams only"
        ));
    }
    base.parse::<axum::http::Uri>()
        .map_err(|e| format!("{key}: `{url}` is not a URL: {e}"))?;
    let headers = headers
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
        headers,
    })
}

impl Upstreams {
    /// Builds the upstreams from the config; a bad URL or header fails the start.
    pub fn from_config(
        default: Option<&str>,
        targets: &BTreeMap<String, ProxyTarget>,
    ) -> Result<Upstreams, String> {
        let default = default
            .map(|url| upstream("proxy.target", url, &BTreeMap::new()))
            .transpose()?;
        let named = targets
            .iter()
            .map(|(name, target)| {
                upstream(&format!("targets.{name}"), &target.url, &target.headers)
                    .map(|u| (name.clone(), u))
            })
            .collect::<Result<_, String>>()?;
        Ok(Upstreams {
            default,
            named,
            ..Upstreams::default()
        })
    }

    /// The upstream for a path after `/proxy/`, and the path to request there: a named target
    /// when the first segment names one (the rest of the path goes upstream), else the default
    /// target with the whole path.
    pub fn resolve<'p>(&self, path: &'p str) -> Option<(&Upstream, &'p str)> {
        let (first, rest) = path.split_once('/').unwrap_or((path, ""));
        match self.named.get(first) {
            Some(named) => Some((named, rest)),
            None => self.default.as_ref().map(|d| (d, path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_targets_take_their_first_segment_and_the_default_takes_the_rest() {
        let targets = BTreeMap::from([(
            "github".to_owned(),
            ProxyTarget {
                url: "http://127.0.0.1:9/".into(),
                headers: BTreeMap::new(),
            },
        )]);
        let up = Upstreams::from_config(Some("http://127.0.0.1:8"), &targets).unwrap();
        let (u, rest) = up.resolve("github/repos/x").unwrap();
        assert_eq!((u.base.as_str(), rest), ("http://127.0.0.1:9", "repos/x"));
        let (u, rest) = up.resolve("api/users").unwrap();
        assert_eq!((u.base.as_str(), rest), ("http://127.0.0.1:8", "api/users"));
        let none = Upstreams::from_config(None, &BTreeMap::new()).unwrap();
        assert!(none.resolve("api/users").is_none());
        assert!(Upstreams::from_config(Some("https://example.com"), &BTreeMap::new()).is_err());
    }
}
