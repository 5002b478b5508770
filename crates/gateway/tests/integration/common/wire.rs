//! Raw HTTP/1.1 over a real socket, for tests that start the gateway on a loopback port and must
//! see the bytes as a client would (no client library normalising paths or headers).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 exchange on a new connection, bounded so nothing hangs.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        parse_response(&response)
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("HTTP exchange within 20 s")
}

/// The status and JSON body (`null` when not JSON) of a raw HTTP/1.1 answer.
pub fn parse_response(response: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(response).into_owned();
    let status: u16 = text.get(9..12).unwrap_or("0").parse().unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}
