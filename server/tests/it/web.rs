//! The embedded voice-room page is served next to the JSON-RPC endpoint.

use dspeak_schema::client::DspeakClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(TIMEOUT, tcp.read_to_end(&mut response)).await.unwrap().unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.to_owned(), body.to_owned())
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_at_the_listen_address() {
    let server = spawn_server().await;
    let addr = server.handle.local_addr();
    for (path, content_type) in [("/", "text/html"), ("/app.js", "text/javascript"), ("/style.css", "text/css")] {
        let (head, _) = get(addr, path).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
        assert!(head.contains(content_type), "{path}: {head}");
    }
    let (head, _) = get(addr, "/nothing-here").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, body) = get(addr, "/").await;
    assert!(head.contains("no-cache"), "{head}");
    assert!(body.contains("<script") && body.contains("app.js"), "the page loads its bundle");
    // The JSON-RPC endpoint on the same address still works.
    server.client().await.ping().await.unwrap();
}
