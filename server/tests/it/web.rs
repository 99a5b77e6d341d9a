//! The embedded voice-room page is served next to the JSON-RPC endpoint.

use dspeak_schema::client::DspeakClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test]
async fn the_page_and_its_assets_are_served_at_the_listen_address() {
    let server = spawn_server().await;
    let addr = server.handle.local_addr();
    for (path, content_type) in [("/", "text/html"), ("/app.js", "text/javascript"), ("/style.css", "text/css")] {
        let (head, _) = http_get(addr, path).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
        assert!(head.contains(content_type), "{path}: {head}");
    }
    let (head, _) = http_get(addr, "/nothing-here").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, body) = http_get(addr, "/").await;
    assert!(head.contains("no-cache"), "{head}");
    assert!(body.contains("<script") && body.contains("app.js"), "the page loads its bundle");
    // The JSON-RPC endpoint on the same address still works.
    server.client().await.ping().await.unwrap();
}

#[tokio::test]
async fn the_page_carries_security_headers_and_the_openrpc_document_is_served_over_http() {
    let server = spawn_server().await;
    let addr = server.handle.local_addr();
    let (head, _) = http_get(addr, "/").await;
    let head = head.to_ascii_lowercase();
    for header in [
        "content-security-policy: default-src 'self'",
        "x-content-type-options: nosniff",
        "referrer-policy: no-referrer",
        "permissions-policy: microphone=(self)",
    ] {
        assert!(head.contains(header), "{header} missing: {head}");
    }
    assert!(head.contains("connect-src 'self' ws: wss:"), "development: `?server=` may name any server: {head}");
    let (head, body) = http_get(addr, "/openrpc.json").await;
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("application/json"), "{head}");
    let over_http: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let mut ws = RawWs::connect(&server.url()).await;
    let discovered = ws.request(1, "rpc.discover", serde_json::json!({})).await;
    assert_eq!(over_http, discovered["result"], "GET /openrpc.json is rpc.discover's answer");
}

#[tokio::test]
async fn an_idle_http_connection_is_closed_after_the_header_timeout() {
    let mut config = dspeak_server::Config::for_tests();
    config.connections.http_header_timeout_secs = 1;
    let server = spawn_server_with(config).await;
    let mut tcp = TcpStream::connect(server.handle.local_addr()).await.unwrap();
    // Half a request head, then nothing.
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(TIMEOUT, tcp.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the slow request head is still being waited for");
    // A kept-alive connection that sends nothing after its first request.
    let mut tcp = TcpStream::connect(server.handle.local_addr()).await.unwrap();
    tcp.write_all(b"GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(TIMEOUT, tcp.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "an idle keep-alive connection is still open");
    assert!(String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200"), "it was answered first");
    server.client().await.ping().await.unwrap();
}

#[tokio::test]
async fn in_production_the_page_may_connect_to_its_own_origin_only() {
    // The page's `?server=` names another server only in development: in production its
    // content security policy lets it connect to its own origin alone.
    let mut config = dspeak_server::Config::for_tests();
    config.environment = Some(dspeak_server::config::Environment::Production);
    config.auth_secret = Some("a-production-secret-of-enough-length".parse().unwrap());
    config.announced_address = vec!["127.0.0.1".into()];
    let server = spawn_server_with(config).await;
    let (head, _) = http_get(server.handle.local_addr(), "/").await;
    let csp = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-security-policy:").map(str::to_owned))
        .expect("a content security policy");
    assert!(csp.contains("connect-src 'self';"), "{csp}");
    assert!(!csp.contains("ws:") && !csp.contains("wss:"), "no other WebSocket server: {csp}");
}
