//! The raw WebSocket load client, the same for dspeak (JSON-RPC 2.0) and the Node
//! baseline (plain JSON): pre-built request texts, and a cheap look at each incoming
//! message (its `id`, whether it is an error, the `seq` of a broadcast payload).

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::target::Kind;

/// One client connection.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a connection with Nagle's algorithm off.
pub(crate) async fn connect(url: &str) -> anyhow::Result<Ws> {
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(ws)
}

/// What a message is, as far as the load tool cares.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// The answer to request `id`.
    Response { id: u64, error: bool },
    /// A broadcast delivery whose payload carries `"seq": n`.
    Delivery { seq: u64 },
    /// Anything else (events, welcome).
    Other,
}

#[derive(Deserialize)]
struct Head<'a> {
    id: Option<u64>,
    error: Option<IgnoredAny>,
    #[serde(rename = "type", borrow)]
    kind: Option<&'a str>,
}

/// Classifies a text message.
pub(crate) fn classify(text: &str) -> Incoming {
    let Ok(head) = serde_json::from_str::<Head<'_>>(text) else {
        return Incoming::Other;
    };
    if let Some(id) = head.id {
        let error = head.error.is_some() || head.kind == Some("error");
        return Incoming::Response { id, error };
    }
    match seq_of(text) {
        Some(seq) => Incoming::Delivery { seq },
        None => Incoming::Other,
    }
}

/// The broadcast payload's `seq` (events have a `seq` of their own, before it).
fn seq_of(text: &str) -> Option<u64> {
    const KEY: &str = "\"payload\":{\"seq\":";
    let at = text.find(KEY)? + KEY.len();
    let digits: &str = &text[at..];
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// Request texts in each server's protocol.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Proto(pub(crate) Kind);

impl Proto {
    pub(crate) fn join(self, id: u64, room: &str, name: &str) -> String {
        match self.0 {
            Kind::Dspeak => format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"join","params":{{"room":"{room}","displayName":"{name}"}}}}"#
            ),
            Kind::Node => format!(r#"{{"type":"join","id":{id},"room":"{room}"}}"#),
        }
    }

    /// The request that opens the event stream, if the protocol has one.
    pub(crate) fn subscribe(self, id: u64) -> Option<String> {
        match self.0 {
            Kind::Dspeak => Some(format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"subscribeEvents"}}"#)),
            Kind::Node => None,
        }
    }

    pub(crate) fn broadcast(self, id: u64, seq: u64) -> String {
        let payload = format!(r#"{{"seq":{seq},"text":"hello from the load tool"}}"#);
        match self.0 {
            Kind::Dspeak => {
                format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"broadcast","params":{{"payload":{payload}}}}}"#)
            }
            Kind::Node => format!(r#"{{"type":"broadcast","id":{id},"payload":{payload}}}"#),
        }
    }
}

/// Sends a text message.
pub(crate) async fn send(ws: &mut Ws, text: String) -> anyhow::Result<()> {
    ws.send(Message::text(text)).await.context("send")
}

/// Waits for the response to `id`, skipping everything else.
pub(crate) async fn response(ws: &mut Ws, id: u64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .with_context(|| format!("no response to request {id} in 30 s"))?;
        match msg {
            Some(Ok(Message::Text(t))) => match classify(&t) {
                Incoming::Response { id: got, error } if got == id => {
                    if error {
                        bail!("request {id} failed: {t}");
                    }
                    return Ok(());
                }
                _ => continue,
            },
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e).context("receive"),
            None => bail!("connection closed while waiting for {id}"),
        }
    }
}

/// Sends a request and waits for its response.
pub(crate) async fn request(ws: &mut Ws, id: u64, text: String) -> anyhow::Result<()> {
    send(ws, text).await?;
    response(ws, id).await
}

/// Connects and joins `room` (subscribing to events first on dspeak).
pub(crate) async fn joined(proto: Proto, url: &str, room: &str, name: &str) -> anyhow::Result<Ws> {
    let mut ws = connect(url).await?;
    if let Some(sub) = proto.subscribe(1) {
        request(&mut ws, 1, sub).await?;
    }
    request(&mut ws, 2, proto.join(2, room, name)).await?;
    Ok(ws)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_both_protocols() {
        assert_eq!(
            classify(r#"{"jsonrpc":"2.0","id":7,"result":{"type":"pong","timestamp":1}}"#),
            Incoming::Response { id: 7, error: false }
        );
        assert_eq!(
            classify(r#"{"jsonrpc":"2.0","id":7,"error":{"code":1,"message":"x"}}"#),
            Incoming::Response { id: 7, error: true }
        );
        assert_eq!(
            classify(
                r#"{"jsonrpc":"2.0","method":"event","params":{"subscription":1,"result":{"seq":9,"type":"broadcast","from":"p","payload":{"seq":42,"text":"x"}}}}"#
            ),
            Incoming::Delivery { seq: 42 }
        );
        assert_eq!(
            classify(r#"{"type":"broadcast","from":"1","payload":{"seq":3,"text":"x"}}"#),
            Incoming::Delivery { seq: 3 }
        );
        assert_eq!(classify(r#"{"type":"ack","id":9,"delivered":2}"#), Incoming::Response { id: 9, error: false });
        assert_eq!(classify(r#"{"type":"welcome"}"#), Incoming::Other);
    }
}
