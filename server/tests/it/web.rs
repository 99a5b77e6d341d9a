//! The embedded voice-room page is served next to the JSON-RPC endpoint.

use crate::support::*;
use dspeak_schema::client::DspeakClient;

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
