//! Malformed input over a raw WebSocket: every message gets the right JSON-RPC error,
//! and the connection and the server keep serving.

use dspeak_schema::client::DspeakClient;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

#[tokio::test]
async fn malformed_messages_get_standard_errors_and_the_connection_survives() {
    let server = spawn_server().await;
    let bystander = server.client().await;
    let mut ws = RawWs::connect(&server.url()).await;

    ws.send_text("{not json").await;
    let v = ws.recv().await;
    assert_eq!(raw_code(&v), -32700, "{v}");
    assert_eq!(v["id"], Value::Null);

    ws.send_text("12345").await;
    assert_eq!(raw_code(&ws.recv().await), -32700);

    let v = ws.request(1, "noSuchMethod", json!({})).await;
    assert_eq!(raw_code(&v), -32601);

    let v = ws.request(2, "join", json!({"room": 5, "displayName": "x"})).await;
    assert_eq!(raw_code(&v), -32602);
    assert!(v["error"]["message"].as_str().unwrap().contains("invalid type"), "{v}");

    let v = ws.request(3, "join", json!(["r", "x"])).await;
    assert_eq!(raw_code(&v), -32602, "positional params are rejected: {v}");

    let v = ws.request(4, "broadcast", json!({})).await;
    assert_eq!(raw_code(&v), -32602);

    ws.send_text(r#"{"jsonrpc":"2.0","id":5}"#).await;
    let v = ws.recv().await;
    assert_eq!(raw_code(&v), -32600, "{v}");

    ws.send_text(r#"[{"jsonrpc":"2.0","id":6,"method":"ping"},{"jsonrpc":"2.0","id":7,"method":"ping"}]"#).await;
    let v = ws.recv().await;
    assert_eq!(raw_code(&v), -32005, "batches are refused: {v}");

    // Oversized message: answered with id null; the connection stays usable.
    let huge = json!({"jsonrpc": "2.0", "id": 8, "method": "broadcast", "params": {"payload": "z".repeat(70_000)}});
    ws.send_text(huge.to_string()).await;
    let v = ws.recv().await;
    assert_eq!(raw_code(&v), -32007, "{v}");
    assert_eq!(v["id"], Value::Null);

    // Binary frames and deeply nested JSON.
    ws.send(Message::binary(vec![0xff, 0x00, 0x12])).await;
    let v = ws.recv().await;
    assert_eq!(raw_code(&v), -32700, "{v}");
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let v = ws.request(9, "broadcast", json!({"payload": 1})).await;
    assert_eq!(raw_code(&v), 1000, "not joined: {v}");
    ws.send_text(format!(r#"{{"jsonrpc":"2.0","id":10,"method":"join","params":{nested}}}"#)).await;
    let v = ws.recv().await;
    assert!(raw_code(&v) == -32602 || raw_code(&v) == -32700, "{v}");

    // Still serving: this connection and others.
    let v = ws.request(11, "ping", json!({})).await;
    assert_eq!(v["result"]["type"], "pong");
    let v = ws.request(12, "ping", Value::Null).await;
    assert_eq!(v["result"]["type"], "pong", "{v}");
    bystander.ping().await.unwrap();
}

#[tokio::test]
async fn methods_without_params_accept_missing_empty_object_or_empty_array() {
    let server = spawn_server().await;
    let mut ws = RawWs::connect(&server.url()).await;
    ws.send_text(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await;
    assert_eq!(ws.recv().await["result"]["type"], "pong");
    assert_eq!(ws.request(2, "ping", json!({})).await["result"]["type"], "pong");
    assert_eq!(ws.request(3, "ping", json!([])).await["result"]["type"], "pong");
    // Positional params are refused by these methods too (listed in the OpenRPC export).
    let v = ws.request(4, "ping", json!([1])).await;
    assert_eq!(raw_code(&v), -32602, "{v}");
    let v = ws.request(5, "leave", json!(["now"])).await;
    assert_eq!(raw_code(&v), -32602, "{v}");
}

#[test]
#[should_panic(expected = "does not match the exported schema")]
fn the_schema_check_of_answers_is_live() {
    // Every answer the tests see goes through `validate`; it must reject a bad one.
    validate("PingResult", &json!({"type": "pong"}));
}
