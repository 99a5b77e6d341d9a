//! A backend next to dspeak: it mints access tokens for its users (the claims are
//! [`TokenClaims`]; any HS256 JWT library signs them) and talks to the server itself with
//! the typed client (feature `client`). Two sessions join a room with their tokens, one
//! broadcasts to the other, a token for another room is refused with a typed error, and
//! an admin token lists the room's peers by identity (`adminListPeers`).
//!
//! ```sh
//! dspeak --auth-secret "$SECRET" &                     # or: cargo run -p dspeak-server -- --auth-secret …
//! cargo run -p dspeak-schema --features client --example backend -- ws://127.0.0.1:8080 "$SECRET"
//! ```
//!
//! A backend that only mints tokens depends on `dspeak-schema` without features: the
//! wire types and `TokenClaims`, without jsonrpsee.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use dspeak_schema::admin::AdminRoomParams;
use dspeak_schema::auth::TokenClaims;
use dspeak_schema::client::{CallExt, DspeakClient, connect};
use dspeak_schema::rooms::{BroadcastParams, JoinParams};
use dspeak_schema::{ErrorCode, Event};
use jsonrpsee::core::ClientError;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// Signs claims for `identity` in `room` (an admin token with `admin`), valid for ten
/// minutes.
fn mint(secret: &str, identity: &str, room: &str, admin: bool) -> anyhow::Result<String> {
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    let claims = TokenClaims {
        sub: identity.into(),
        room: room.into(),
        name: None,
        metadata: None,
        admin,
        can_publish: false, // a bot: signaling only
        can_subscribe: false,
        can_broadcast: true,
        exp: now + 600,
        nbf: None,
        iat: Some(now),
    };
    Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(secret)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: backend WS_URL AUTH_SECRET");
    };
    let room = "backend-example";

    let announcer = connect(&url).await.context("connect")?;
    let listener = connect(&url).await.context("connect")?;
    let mut events = listener.subscribe_events().await?;

    // A token for another room: `forbidden`, a typed JSON-RPC error.
    let wrong_room = JoinParams {
        room: room.into(),
        display_name: "Announcer".into(),
        token: Some(mint(&secret, "announcer", "another-room", false)?),
    };
    match announcer.join(wrong_room).await {
        Err(ClientError::Call(error)) if error.code() == ErrorCode::Forbidden.code() => {
            println!("refused as expected: {} ({})", ErrorCode::Forbidden.name(), error.message());
        }
        other => anyhow::bail!("expected forbidden, got {other:?}"),
    }

    let token = Some(mint(&secret, "listener", room, false)?);
    let joined = listener.join(JoinParams { room: room.into(), display_name: "Listener".into(), token }).await?;
    let token = Some(mint(&secret, "announcer", room, false)?);
    let announcer_joined =
        announcer.join(JoinParams { room: room.into(), display_name: "Announcer".into(), token }).await?;
    println!("joined {room}: listener {}, announcer {}", joined.peer_id, announcer_joined.peer_id);

    let sent = announcer.broadcast(BroadcastParams { payload: json!({ "notice": "maintenance at 22:00" }) }).await?;
    ensure!(sent.delivered == 1, "broadcast reached {} peers, expected 1", sent.delivered);
    loop {
        match events.next().await.context("event stream ended")?? {
            Event::Broadcast { from, payload } => {
                ensure!(from.as_ref() == Some(&announcer_joined.peer_id), "broadcast from {from:?}");
                println!("listener got a broadcast from {}: {payload}", announcer_joined.peer_id);
                break;
            }
            other => println!("listener event: {other:?}"),
        }
    }

    // The admin API (an admin token): who is in the room, by identity.
    let admin = AdminRoomParams { token: mint(&secret, "backend", "*", true)?, room: room.into() };
    let peers = announcer.admin_list_peers(admin).await?.peers;
    let identities: Vec<&str> = peers.iter().filter_map(|p| p.identity.as_deref()).collect();
    ensure!(identities == ["listener", "announcer"], "peers by identity: {identities:?}");
    println!("admin: {room} has {identities:?}");
    Ok(())
}
