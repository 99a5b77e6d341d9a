//! The control plane: identity and metadata seen by others, and every admin method
//! over WebSocket and over HTTP POST, refused without an admin token.

use dspeak_schema::auth::TokenClaims;
use dspeak_schema::client::DspeakClient;
use dspeak_schema::media::{CreateTransportParams, Direction, ProduceParams, ProducerParams};
use dspeak_schema::rooms::PeerInfo;
use dspeak_schema::{ErrorCode, Event, PeerId};
use serde_json::{Value, json};

use crate::support::*;

/// Where admin calls go: a WebSocket, or one HTTP POST per call.
enum Endpoint {
    Ws(Box<RawWs>, u64),
    Http(reqwest::Client, String),
}

impl Endpoint {
    async fn ws(server: &TestServer) -> Self {
        Endpoint::Ws(Box::new(RawWs::connect(&server.url()).await), 0)
    }

    fn http(server: &TestServer) -> Self {
        Endpoint::Http(reqwest::Client::new(), format!("http://{}/", server.handle.local_addr()))
    }

    /// The whole JSON-RPC response to one call (results and errors checked against the
    /// schema).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        match self {
            Endpoint::Ws(ws, id) => {
                *id += 1;
                ws.request(*id, method, params).await
            }
            Endpoint::Http(client, url) => {
                let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
                let response = client
                    .post(url.as_str())
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .expect("HTTP POST");
                assert!(response.status().is_success(), "HTTP status {}", response.status());
                let response: Value =
                    serde_json::from_str(&response.text().await.expect("a body")).expect("a JSON-RPC response");
                match (response.get("result"), response.get("error")) {
                    (Some(result), _) => validate_result(method, result),
                    (_, Some(error)) => validate("JsonRpcError", error),
                    _ => panic!("neither result nor error: {response}"),
                }
                response
            }
        }
    }

    /// The result of a call that must succeed.
    async fn ok(&mut self, method: &str, params: Value) -> Value {
        let response = self.call(method, params).await;
        response.get("result").cloned().unwrap_or_else(|| panic!("{method} failed: {response}"))
    }

    /// The error code of a call that must fail.
    async fn code(&mut self, method: &str, params: Value) -> i64 {
        raw_code(&self.call(method, params).await)
    }
}

fn user(identity: &str, room: &str, metadata: Option<&str>) -> TokenClaims {
    TokenClaims { metadata: metadata.map(str::to_owned), ..claims(identity, room) }
}

/// A raw client, subscribed and joined with a token; returns its peer id.
async fn raw_joined(server: &TestServer, claims: &TokenClaims) -> (RawWs, PeerId) {
    let mut ws = RawWs::connect(&server.url()).await;
    ws.request(1, "subscribeEvents", json!({})).await;
    let joined =
        ws.request(2, "join", json!({"room": claims.room, "displayName": claims.sub, "token": token(claims)})).await;
    let peer = joined["result"]["peerId"].as_str().unwrap_or_else(|| panic!("join failed: {joined}"));
    (ws, PeerId::from(peer))
}

/// Reads a raw client's messages until an event of `kind`.
async fn raw_event(ws: &mut RawWs, kind: &str) -> Value {
    loop {
        let message = ws.recv().await;
        if let Some(error) = message["params"].get("error") {
            panic!("stream ended while waiting for {kind}: {error}");
        }
        let event = &message["params"]["result"];
        if event["type"] == kind {
            validate("Event", event);
            // Compared without its number in the session.
            let mut event = event.clone();
            assert!(event.as_object_mut().and_then(|e| e.remove("seq")).is_some_and(|n| n.as_u64() > Some(0)));
            return event;
        }
    }
}

/// Reads a raw client's messages until its event stream ends; returns the error.
async fn raw_stream_end(ws: &mut RawWs) -> Value {
    loop {
        let message = ws.recv().await;
        if let Some(error) = message["params"].get("error") {
            return error.clone();
        }
    }
}

#[tokio::test]
async fn identity_and_metadata_reach_the_other_peers() {
    let server = secured().await;
    let mut ann = server.joined_with(&user("user-1", "id", Some(r#"{"avatar":"a.png"}"#)), "Ann").await;
    let ann_joined = ann.joined.clone().expect("joined");
    assert_eq!(ann_joined.identity.as_deref(), Some("user-1"));
    assert_eq!(ann_joined.metadata.as_deref(), Some(r#"{"avatar":"a.png"}"#));
    let bob = server.joined_with(&user("user-2", "id", None), "Bob").await;
    let bob_joined = bob.joined.clone().expect("joined");
    let ann_info = PeerInfo {
        peer_id: ann_joined.peer_id.clone(),
        display_name: "Ann".into(),
        identity: Some("user-1".into()),
        metadata: Some(r#"{"avatar":"a.png"}"#.into()),
        self_mute: false,
        self_deaf: false,
        server_muted: false,
    };
    assert_eq!(bob_joined.peers, [ann_info]);
    let joined = ann.event_where("peerJoined", |e| matches!(e, Event::PeerJoined { .. })).await;
    assert_eq!(
        joined,
        Event::PeerJoined {
            peer_id: bob_joined.peer_id,
            display_name: "Bob".into(),
            identity: Some("user-2".into()),
            metadata: None
        }
    );
    // Anonymous peers (a server without a secret) have a null identity.
    let open = spawn_server().await;
    let anon = open.joined("anon", "Cy").await;
    assert_eq!(anon.joined.as_ref().and_then(|j| j.identity.clone()), None);
    // Metadata is capped at 4 KiB.
    let client = server.client().await;
    let big = token(&user("user-3", "id", Some(&"x".repeat(4097))));
    let params = dspeak_schema::rooms::JoinParams { room: "id".into(), display_name: "Big".into(), token: Some(big) };
    assert_eq!(code_of(client.join(params).await), ErrorCode::PayloadTooLarge.code());
}

#[tokio::test]
async fn admin_methods_work_over_websocket() {
    let server = secured().await;
    let endpoint = Endpoint::ws(&server).await;
    every_admin_method(&server, endpoint, "ws").await;
}

#[tokio::test]
async fn admin_methods_work_over_http_post() {
    let server = secured().await;
    every_admin_method(&server, Endpoint::http(&server), "http").await;
}

/// Lists, mutes, broadcasts, removes and closes in room `room`.
async fn every_admin_method(server: &TestServer, mut admin: Endpoint, room: &str) {
    let token = admin_token("*");
    let (mut ann, ann_id) = raw_joined(server, &user("ann", room, Some("ann's data"))).await;
    let mut bob = server.joined_with(&user("bob", room, None), "Bob").await;
    let bob_id = bob.peer_id();
    let send = bob.client.create_transport(CreateTransportParams { direction: Direction::Send }).await.unwrap();
    let mut produce: ProduceParams =
        serde_json::from_value(fixture("pymediasoup-1.5-aiortc-1.16/produce.params.json")).unwrap();
    produce.transport_id = send.id;
    let producer = bob.client.produce(produce).await.unwrap().id;

    let rooms = admin.ok("adminListRooms", json!({"token": token})).await;
    assert_eq!(rooms["rooms"].as_array().map(Vec::len), Some(1), "{rooms}");
    let listed = &rooms["rooms"][0];
    assert_eq!((&listed["room"], &listed["peers"], &listed["producers"]), (&json!(room), &json!(2), &json!(1)));
    assert!(listed["createdAtMs"].as_i64().is_some_and(|t| t > 1_700_000_000_000), "{listed}");

    let peers = admin.ok("adminListPeers", json!({"token": token, "room": room})).await;
    let peers = peers["peers"].as_array().expect("peers").clone();
    assert_eq!(peers.len(), 2);
    assert_eq!((&peers[0]["peerId"], &peers[0]["identity"]), (&json!(ann_id), &json!("ann")));
    assert_eq!(peers[0]["metadata"], "ann's data");
    assert_eq!((&peers[1]["identity"], &peers[1]["metadata"]), (&json!("bob"), &Value::Null));
    assert_eq!(peers[1]["producers"][0]["producerId"], json!(producer));
    assert_eq!((&peers[1]["serverMuted"], &peers[0]["producers"]), (&json!(false), &json!([])));

    // Server mute: the room sees the producer paused, and bob cannot resume it.
    let mute = |muted: bool| json!({"token": token, "room": room, "peerId": bob_id, "muted": muted});
    assert_eq!(admin.ok("adminMutePeer", mute(true)).await, json!({}));
    let updated = raw_event(&mut ann, "peerUpdated").await;
    assert_eq!(updated, json!({"type": "peerUpdated", "peerId": bob_id, "serverMuted": true}));
    let paused = raw_event(&mut ann, "producerPaused").await;
    assert_eq!(paused["producerId"], json!(producer));
    let told = bob.event_where("peerUpdated", |e| matches!(e, Event::PeerUpdated { .. })).await;
    assert_eq!(told, Event::PeerUpdated { peer_id: bob_id.clone(), server_muted: true });
    let resume = || ProducerParams { producer_id: producer.clone() };
    assert_eq!(code_of(bob.client.resume_producer(resume()).await), ErrorCode::Forbidden.code());
    let peers = admin.ok("adminListPeers", json!({"token": token, "room": room})).await;
    assert_eq!(peers["peers"][1]["serverMuted"], true);
    assert_eq!(peers["peers"][1]["producers"][0]["paused"], true);
    assert_eq!(admin.ok("adminMutePeer", mute(false)).await, json!({}));
    assert_eq!(raw_event(&mut ann, "peerUpdated").await["serverMuted"], false);
    bob.client.resume_producer(resume()).await.expect("unmuted: bob may resume");
    raw_event(&mut ann, "producerResumed").await;

    // A broadcast from the server reaches everyone, from null.
    let sent = admin.ok("adminBroadcast", json!({"token": token, "room": room, "payload": {"notice": 1}})).await;
    assert_eq!(sent, json!({"delivered": 2}));
    assert_eq!(
        raw_event(&mut ann, "broadcast").await,
        json!({"type": "broadcast", "from": null, "payload": {"notice": 1}})
    );
    let heard = bob.event_where("broadcast", |e| matches!(e, Event::Broadcast { .. })).await;
    assert_eq!(heard, Event::Broadcast { from: None, payload: json!({"notice": 1}) });

    // Removing ann ends her stream with `removed:`; her connection stays usable.
    let remove = json!({"token": token, "room": room, "peerId": ann_id});
    assert_eq!(admin.ok("adminRemovePeer", remove.clone()).await, json!({}));
    let end = raw_stream_end(&mut ann).await;
    assert_eq!(end["code"], ErrorCode::Forbidden.code(), "{end}");
    assert!(end["message"].as_str().is_some_and(|m| m.starts_with("removed:")), "{end}");
    assert_eq!(end["data"], json!({"reason": "removed"}));
    let left = bob.event_where("peerLeft", |e| matches!(e, Event::PeerLeft { .. })).await;
    assert_eq!(left, Event::PeerLeft { peer_id: ann_id.clone() });
    assert_eq!(ann.request(10, "ping", json!({})).await["result"]["type"], "pong");
    assert_eq!(raw_code(&ann.request(11, "leave", json!({})).await), i64::from(ErrorCode::NotJoined.code()));
    assert_eq!(admin.code("adminRemovePeer", remove).await, i64::from(ErrorCode::NotFound.code()));

    // Closing the room removes everyone; it is gone.
    assert_eq!(admin.ok("adminCloseRoom", json!({"token": token, "room": room})).await, json!({}));
    assert_eq!(code_of(bob.client.leave().await), ErrorCode::NotJoined.code());
    assert_eq!(admin.ok("adminListRooms", json!({"token": token})).await, json!({"rooms": []}));
    server.wait_counts("room closed", |c| c.rooms == 0 && c.peers == 0 && c.producers == 0).await;
    for method in ["adminListPeers", "adminCloseRoom"] {
        let code = admin.code(method, json!({"token": token, "room": room})).await;
        assert_eq!(code, i64::from(ErrorCode::NotFound.code()), "{method}");
    }
    let payload = json!({"token": token, "room": room, "payload": 1});
    assert_eq!(admin.code("adminBroadcast", payload).await, i64::from(ErrorCode::NotFound.code()));
}

#[tokio::test]
async fn a_closed_room_ends_every_stream_with_room_closed() {
    let server = secured().await;
    let (mut ann, _) = raw_joined(&server, &user("ann", "doomed", None)).await;
    let (mut bob, _) = raw_joined(&server, &user("bob", "doomed", None)).await;
    let mut admin = Endpoint::http(&server);
    admin.ok("adminCloseRoom", json!({"token": admin_token("doomed"), "room": "doomed"})).await;
    for ws in [&mut ann, &mut bob] {
        let end = raw_stream_end(ws).await;
        assert!(end["message"].as_str().is_some_and(|m| m.starts_with("removed:")), "{end}");
        assert_eq!(end["data"], json!({"reason": "roomClosed"}));
    }
    server.wait_counts("room gone", |c| c.rooms == 0).await;
}

#[tokio::test]
async fn admin_methods_are_refused_without_an_admin_token() {
    let server = secured().await;
    let _ann = server.joined_with(&user("ann", "r", None), "Ann").await;
    let ann_id = _ann.peer_id();
    let calls = |token: &str| {
        [
            ("adminListRooms", json!({"token": token})),
            ("adminListPeers", json!({"token": token, "room": "r"})),
            ("adminRemovePeer", json!({"token": token, "room": "r", "peerId": ann_id})),
            ("adminMutePeer", json!({"token": token, "room": "r", "peerId": ann_id, "muted": true})),
            ("adminCloseRoom", json!({"token": token, "room": "r"})),
            ("adminBroadcast", json!({"token": token, "room": "r", "payload": 1})),
        ]
    };
    let user_token = token(&claims("ann", "r"));
    let mut expired = TokenClaims { admin: true, ..claims("backend", "*") };
    expired.exp = now() - 600;
    let expired = token(&expired);
    for mut endpoint in [Endpoint::ws(&server).await, Endpoint::http(&server)] {
        for (bad, code) in [
            (user_token.as_str(), ErrorCode::Unauthorized),
            ("garbage", ErrorCode::Unauthorized),
            (expired.as_str(), ErrorCode::TokenExpired),
        ] {
            for (method, params) in calls(bad) {
                assert_eq!(endpoint.code(method, params).await, i64::from(code.code()), "{method} with {bad}");
            }
        }
        // Without a token the params are invalid.
        let missing = endpoint.call("adminListRooms", json!({})).await;
        assert_eq!(raw_code(&missing), -32602);
        // A token for another room: that room only.
        let other = admin_token("other");
        for (method, params) in calls(&other).into_iter().skip(1) {
            assert_eq!(endpoint.code(method, params).await, i64::from(ErrorCode::Forbidden.code()), "{method}");
        }
        assert_eq!(endpoint.ok("adminListRooms", json!({"token": other})).await, json!({"rooms": []}));
    }
    // Nothing happened to ann, and an admin token cannot join.
    server.wait_counts("ann still there", |c| c.peers == 1).await;
    let client = server.client().await;
    let params = dspeak_schema::rooms::JoinParams {
        room: "r".into(),
        display_name: "Boss".into(),
        token: Some(admin_token("r")),
    };
    assert_eq!(code_of(client.join(params).await), ErrorCode::Forbidden.code());
    // A server without a secret has no admin API.
    let open = spawn_server().await;
    let code = Endpoint::http(&open).code("adminListRooms", json!({"token": admin_token("*")})).await;
    assert_eq!(code, i64::from(ErrorCode::Unauthorized.code()));
}

/// A peer removed while it has no event stream open hears why on the stream it opens
/// next (after `welcome`); after joining again its new stream starts afresh.
#[tokio::test]
async fn a_removal_while_unsubscribed_reaches_the_next_stream() {
    let server = secured().await;
    let mut admin = Endpoint::ws(&server).await;
    let admin_token = admin_token("*");
    let claims = user("ann", "quiet", None);
    let mut ann = RawWs::connect(&server.url()).await;
    let joined = ann.request(1, "join", json!({"room": "quiet", "displayName": "Ann", "token": token(&claims)})).await;
    let ann_id = joined["result"]["peerId"].as_str().unwrap_or_else(|| panic!("{joined}")).to_owned();
    let remove = json!({"token": admin_token, "room": "quiet", "peerId": ann_id});
    assert_eq!(admin.ok("adminRemovePeer", remove).await, json!({}));
    ann.request(2, "subscribeEvents", json!({})).await;
    let end = raw_stream_end(&mut ann).await;
    assert_eq!(end["data"], json!({"reason": "removed"}), "{end}");
    // Joined again: the next stream is an ordinary one.
    let again = ann.request(3, "join", json!({"room": "quiet", "displayName": "Ann", "token": token(&claims)})).await;
    assert!(again.get("result").is_some(), "{again}");
    ann.request(4, "subscribeEvents", json!({})).await;
    let bob = server.joined_with(&user("bob", "quiet", None), "Bob").await;
    raw_event(&mut ann, "peerJoined").await;
    drop(bob);
}
