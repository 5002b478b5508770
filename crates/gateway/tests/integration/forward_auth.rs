//! `/auth/forward` behind a real nginx (`auth_request`): allowed requests reach the upstream,
//! denied and unauthenticated ones never do, and the reason reaches the client.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::response::IntoResponse;
use serde_json::json;

use crate::common::TestGateway;
use crate::common::upstream::recording_upstream;

const POLICY: &str = r#"name: api
version: "1"
appliesTo: {tags: [web]}
rules:
  - name: no-secrets
    effect: deny
    actions: ["read:api/secrets/*"]
  - name: reads
    effect: allow
    actions: ["read:api/*"]
"#;

/// nginx in the foreground, one process, everything under `dir`; killed on drop.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_nginx(dir: &std::path::Path, port: u16, gateway: &str, upstream: &str) -> Nginx {
    let conf = format!(
        r#"
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{}}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      auth_request /_meshguard;
      auth_request_set $meshguard_reason $upstream_http_x_meshguard_reason;
      add_header X-MeshGuard-Reason $meshguard_reason always;
      proxy_pass {upstream};
    }}
    location = /_meshguard {{
      internal;
      proxy_pass {gateway}/auth/forward;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
    }}
  }}
}}
"#,
        dir = dir.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let nginx = ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|bin| Command::new(bin).arg("-v").output().is_ok())
        .expect("nginx is needed (scripts/test.sh installs Debian's nginx-light)");
    let child = Command::new(nginx)
        .args(["-p", dir.to_str().unwrap(), "-c", path.to_str().unwrap()])
        .args(["-g", "daemon off; master_process off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Nginx(child)
}

#[tokio::test]
async fn nginx_lets_through_only_what_meshguard_allows() {
    let gw = TestGateway::new().await;
    gw.policy(POLICY).await;
    let (_, token) = gw.agent("web-bot", "verified", &["web"]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = format!("http://{}", listener.local_addr().unwrap());
    let app = meshguard_gateway::app(gw.state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (upstream, seen) = recording_upstream(|_| "upstream answer".into_response()).await;

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _nginx = start_nginx(dir.path(), port, &gateway, &upstream);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let front = format!("http://127.0.0.1:{port}");
    // nginx starts in the background: bounded wait for its port.
    for _ in 0..100 {
        if client.get(&front).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let get = |path: &str, token: Option<&str>| {
        let mut request = client.get(format!("{front}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let allowed = get("/api/docs/readme?lang=en", Some(&token)).await.unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.text().await.unwrap(), "upstream answer");

    let denied = get("/api/secrets/key", Some(&token)).await.unwrap();
    assert_eq!(denied.status(), 403);
    let reason = denied.headers()["x-meshguard-reason"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("no-secrets"), "{reason}");

    let anonymous = get("/api/docs/readme", None).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let sneaky = get("/api/docs/..%2fsecrets/key", Some(&token))
        .await
        .unwrap();
    assert_eq!(
        sneaky.status(),
        403,
        "a path that reads two ways is refused"
    );

    let reached: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| r["uri"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        reached,
        ["/api/docs/readme?lang=en"],
        "only the allowed request reached the upstream"
    );

    // Each decision is a check in the audit trail, with the real method and path.
    let checks: Vec<_> = gw
        .events()
        .await
        .into_iter()
        .filter(|e| e.event.kind == meshguard_store::AuditKind::Check)
        .map(|e| (e.event.action.clone(), e.event.context["path"].clone()))
        .collect();
    assert!(
        checks.contains(&("read:api/docs/readme".to_owned(), json!("/api/docs/readme"))),
        "{checks:?}"
    );
    assert!(
        checks
            .iter()
            .any(|(action, _)| action == "read:api/secrets/key"),
        "{checks:?}"
    );
}

#[tokio::test]
async fn traefik_and_envoy_shapes_name_the_original_request_too() {
    use axum::body::Body;
    use axum::http::Request;

    let gw = TestGateway::new().await;
    gw.policy(POLICY).await;
    let (_, token) = gw.agent("web-bot", "verified", &["web"]).await;
    // Traefik ForwardAuth: X-Forwarded-Method and X-Forwarded-Uri.
    let traefik = Request::get("/auth/forward")
        .header("authorization", format!("Bearer {token}"))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/api/secrets/key?x=1")
        .body(Body::empty())
        .unwrap();
    let answer = gw.send(traefik).await;
    assert_eq!(answer.status, 403, "{}", answer.text);
    assert_eq!(answer.body["rule"], "no-secrets");
    // Envoy ext_authz (HTTP service, path prefix /auth/forward): the original method and path.
    let envoy = Request::get("/auth/forward/api/docs/readme")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let answer = gw.send(envoy).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["action"], "read:api/docs/readme");
    let write = Request::post("/auth/forward/api/docs/readme")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let answer = gw.send(write).await;
    assert_eq!(answer.status, 403, "a write is not a read: {}", answer.text);
    assert_eq!(answer.body["action"], "write:api/docs/readme");
}
