//! A real upstream for the reverse proxy on a loopback port: it remembers every request it
//! receives (method, URI, headers, body) and answers with whatever the test asks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::response::Response;
use serde_json::{Value, json};

/// Every request an upstream received, in order.
pub type Seen = Arc<Mutex<Vec<Value>>>;

/// Starts an upstream whose answer to each request is `answer(what it received)`; returns its
/// base URL and what it has seen.
pub async fn recording_upstream(
    answer: impl Fn(&Value) -> Response + Clone + Send + Sync + 'static,
) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |request: Request| {
        let (log, answer) = (log.clone(), answer.clone());
        async move {
            let headers: BTreeMap<String, String> = request
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            let method = request.method().to_string();
            let uri = request.uri().to_string();
            let body = axum::body::to_bytes(request.into_body(), 1 << 20)
                .await
                .unwrap();
            let received = json!({"method": method, "uri": uri, "headers": headers,
                                  "body": String::from_utf8_lossy(&body)});
            log.lock().unwrap().push(received.clone());
            answer(&received)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}
