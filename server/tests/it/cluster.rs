//! Cluster mode against a real `redis-server` (Debian's package) on a free loopback
//! port: rooms placed once, `wrongNode` redirects, a join storm over three nodes, Redis
//! going away and coming back, and (with `pymediasoup` in the name) real WebRTC peers
//! on three `dspeak` binaries surviving a `kill -9` of the node that hosts their room.
//!
//! Needs `redis-server` on the `PATH` (`.ci/run` installs it): without it the tests are
//! skipped locally and fail under CI.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use dspeak_schema::ErrorCode;
use dspeak_schema::admin::{AdminBroadcastParams, AdminParams, AdminPeerParams, AdminRoomParams};
use dspeak_schema::client::{DspeakClient, wrong_node};
use dspeak_schema::rooms::{JoinParams, JoinResult};
use dspeak_server::Config;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::ops::Binary;
use crate::pymediasoup::python;
use crate::support::*;

/// How long a room's lease and a node's record live without a heartbeat (the server's
/// `LEASE`), with the heartbeat's period on top.
const LEASE: Duration = Duration::from_secs(8);

/// A free loopback TCP port (bound, then released for the process to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// `redis-server` on `port`, without persistence; killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    /// Starts one on a free port; `None` (skip) when Debian's `redis-server` is missing
    /// outside CI.
    async fn start() -> Option<Redis> {
        if which("redis-server").is_none() {
            assert!(std::env::var_os("CI").is_none(), "redis-server is missing: .ci/run installs it");
            eprintln!("skipping cluster test: redis-server is not installed (apt-get install -y redis-server)");
            return None;
        }
        Some(Redis::start_on(free_port()).await)
    }

    async fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        let deadline = Instant::now() + TIMEOUT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "redis-server listens on {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Redis { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Runs `redis-cli` against it.
    async fn cli(&self, args: &[&str]) {
        let status = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .status()
            .await
            .expect("redis-cli runs");
        assert!(status.success(), "redis-cli {args:?}: {status}");
    }

    /// Kills it (`kill -9`): its data is gone.
    async fn kill(mut self) -> u16 {
        self.child.kill().await.expect("redis-server is killed");
        self.port
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(program)).find(|p| p.is_file())
}

/// A node of the cluster in this process, on a port chosen first so its `--node-url`
/// is known.
async fn node(redis: &Redis) -> TestServer {
    node_with(redis, Config::for_tests()).await
}

/// A node as `node`, from `config`.
async fn node_with(redis: &Redis, mut config: Config) -> TestServer {
    let port = free_port();
    config.listen = ([127, 0, 0, 1], port).into();
    config.cluster.redis_url = Some(redis.url());
    config.cluster.node_url = Some(format!("ws://127.0.0.1:{port}"));
    config.connections.max_unjoined_per_ip = 1000;
    config.limits.request_rate = 10_000;
    spawn_server_with(config).await
}

async fn nodes(redis: &Redis, n: usize) -> Vec<TestServer> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(node(redis).await);
    }
    // Every node is registered after its first heartbeat, sent when it starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    nodes
}

fn params(room: &str, name: &str) -> JoinParams {
    JoinParams { room: room.into(), display_name: name.into(), token: None }
}

/// Connects to `url` and joins `room`, following `wrongNode` (at most 3 hops) as the
/// SDK does; returns the client, the URL it joined on and the hops taken.
async fn join_following(url: &str, room: &str, name: &str) -> (Client, JoinResult, String, usize) {
    let mut url = url.to_owned();
    for hops in 0..=3 {
        let client = client_at(&url).await;
        match client.join(params(room, name)).await {
            Ok(joined) => return (client, joined, url, hops),
            Err(e) => {
                let moved = wrong_node(&e).unwrap_or_else(|| panic!("join {room} on {url}: {e:?}"));
                url = moved.url;
            }
        }
    }
    panic!("join {room}: more than 3 redirects");
}

#[tokio::test]
async fn cluster_mode_needs_a_node_url_and_a_redis_url() {
    let mut config = Config::for_tests();
    config.cluster.redis_url = Some("redis://127.0.0.1:1/0".into());
    let e = dspeak_server::check(&config).expect_err("no --node-url");
    assert!(e.to_string().contains("--node-url"), "{e}");
    config.cluster.node_url = Some("http://node-a".into());
    let e = dspeak_server::check(&config).expect_err("not a ws URL");
    assert!(e.to_string().contains("ws://"), "{e}");
    config.cluster.redis_url = Some("not a url".into());
    config.cluster.node_url = Some("ws://127.0.0.1:1".into());
    assert!(dspeak_server::check(&config).expect_err("bad Redis URL").to_string().contains("--redis-url"));
    let mut config = Config::for_tests();
    config.cluster.node_url = Some("ws://127.0.0.1:1".into());
    assert!(dspeak_server::check(&config).expect_err("node URL alone").to_string().contains("--redis-url"));
}

#[tokio::test]
async fn a_room_lives_on_one_node_and_joins_elsewhere_are_redirected_to_it() {
    let Some(redis) = Redis::start().await else { return };
    let nodes = nodes(&redis, 3).await;
    let urls: Vec<String> = nodes.iter().map(TestServer::url).collect();

    // The first join places the room on the node asked (all are idle: a tie).
    let ann = client_at(&urls[0]).await;
    ann.join(params("r1", "Ann")).await.expect("placed on the node asked");

    // Elsewhere: `wrongNode` with the owner's URL as typed data.
    let bob = client_at(&urls[1]).await;
    let e = bob.join(params("r1", "Bob")).await.expect_err("r1 is on node 0");
    assert_eq!(code_of(bob.join(params("r1", "Bob")).await), ErrorCode::WrongNode.code());
    let moved = wrong_node(&e).expect("typed wrongNode data");
    assert_eq!(moved.url, urls[0]);
    assert!(e.to_string().contains("hosted by another node"), "{e}");
    // The session is still usable on the wrong node.
    bob.ping().await.expect("still connected");

    let (_bob, joined, at, hops) = join_following(&urls[1], "r1", "Bob").await;
    assert_eq!((at.as_str(), hops, joined.peers.len()), (urls[0].as_str(), 1, 1));
    let (_cid, joined, at, hops) = join_following(&urls[2], "r1", "Cid").await;
    assert_eq!((at.as_str(), hops, joined.peers.len()), (urls[0].as_str(), 1, 2));
    nodes[0].wait_counts("three peers on node 0", |c| c.rooms == 1 && c.peers == 3).await;
    for n in &nodes[1..] {
        assert_eq!((n.handle.counts().rooms, n.handle.counts().peers), (0, 0));
    }

    // When the room closes its lease is released: a join anywhere places it again.
    drop((ann, _bob, _cid));
    nodes[0].wait_counts("room closed", |c| c.rooms == 0).await;
    let deadline = Instant::now() + TIMEOUT;
    let dan = client_at(&urls[2]).await;
    loop {
        match dan.join(params("r1", "Dan")).await {
            Ok(_) => break,
            Err(e) if wrong_node(&e).is_some() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("r1 was not released: {e:?}"),
        }
    }
    nodes[2].wait_counts("r1 on node 2", |c| c.rooms == 1).await;
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_join_storm_over_three_nodes_never_gives_a_room_two_owners() {
    let Some(redis) = Redis::start().await else { return };
    let nodes = nodes(&redis, 3).await;
    let urls: Vec<String> = nodes.iter().map(TestServer::url).collect();
    const CLIENTS: usize = 100;
    const ROOMS: usize = 10;
    let joins = (0..CLIENTS).map(|i| {
        let url = urls[i % urls.len()].clone();
        tokio::spawn(async move { join_following(&url, &format!("storm-{}", i % ROOMS), &format!("p{i}")).await })
    });
    let mut joined = Vec::new();
    let mut hosts = BTreeSet::new();
    let mut redirected = 0;
    for join in joins {
        let (client, result, at, hops) = join.await.expect("join task");
        hosts.insert(at);
        redirected += usize::from(hops > 0);
        joined.push((client, result));
    }
    assert!(redirected > 0, "clients spread over three nodes must be redirected");
    // Every room is open on exactly one node: rooms and peers add up.
    let counts: Vec<_> = nodes.iter().map(|n| n.handle.counts()).collect();
    assert_eq!(counts.iter().map(|c| c.rooms).sum::<usize>(), ROOMS, "{counts:?}");
    assert_eq!(counts.iter().map(|c| c.peers).sum::<usize>(), CLIENTS, "{counts:?}");
    // Each client sees exactly its room's earlier members, all on one node.
    for (_, result) in &joined {
        assert!(result.peers.len() < CLIENTS / ROOMS);
    }
    assert!(hosts.len() > 1, "placement spreads rooms over nodes: {hosts:?}");
    drop(joined);
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn without_redis_open_rooms_keep_working_new_rooms_are_refused_until_it_is_back() {
    let Some(redis) = Redis::start().await else { return };
    let nodes = nodes(&redis, 2).await;
    let url = nodes[0].url();
    let mut ann = subscribed_at(&url).await;
    ann.join("open", "Ann").await;
    let addr = nodes[0].handle.local_addr();
    assert_eq!(http_status(addr, "/readyz").await, 200);

    let port = redis.kill().await;
    // After a failed heartbeat the node reports itself not ready: a load balancer
    // sends new calls to nodes that can open rooms.
    let deadline = Instant::now() + LEASE;
    while http_status(addr, "/readyz").await != 503 {
        assert!(Instant::now() < deadline, "/readyz still ready with Redis down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A new member of the room open here is still let in; its members still talk.
    let mut bob = subscribed_at(&url).await;
    bob.join("open", "Bob").await;
    ann.event_where("Bob joined", |e| matches!(e, dspeak_schema::Event::PeerJoined { .. })).await;
    // A room that is nowhere yet cannot be placed.
    let cid = client_at(&url).await;
    let started = Instant::now();
    let e = cid.join(params("new", "Cid")).await.expect_err("Redis is down");
    assert!(started.elapsed() < Duration::from_secs(5), "refused quickly: {:?}", started.elapsed());
    assert!(e.to_string().contains("Redis is unreachable"), "{e}");
    assert_eq!(code_of::<()>(Err(e)), ErrorCode::Unavailable.code());
    cid.ping().await.expect("the connection stays usable");

    // Redis comes back (empty): the nodes register again, the owner takes back its
    // room's lease, and new rooms are placed.
    let _redis = Redis::start_on(port).await;
    let deadline = Instant::now() + LEASE;
    loop {
        match cid.join(params("new", "Cid")).await {
            Ok(_) => break,
            Err(e) if wrong_node(&e).is_some() => {
                join_following(&wrong_node(&e).unwrap().url, "new", "Cid").await;
                break;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "no recovery after Redis came back: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Ready again after the next heartbeat.
    let deadline = Instant::now() + LEASE;
    while http_status(addr, "/readyz").await != 200 {
        assert!(Instant::now() < deadline, "/readyz not ready with Redis back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The open room is still this node's: a join on the other node is redirected here.
    let deadline = Instant::now() + LEASE;
    let dan = client_at(&nodes[1].url()).await;
    loop {
        let e = dan.join(params("open", "Dan")).await.map(|_| ()).expect_err("open stays on node 0");
        if let Some(moved) = wrong_node(&e) {
            assert_eq!(moved.url, url);
            break;
        }
        assert!(Instant::now() < deadline, "{e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((ann, bob));
    for n in nodes {
        n.shutdown().await;
    }
}

/// A node at its `--max-rooms` takes no new room, even when it is the least loaded:
/// placement sends the room to a node that can open it instead of to a refusal.
#[tokio::test]
async fn placement_skips_a_node_at_its_room_limit() {
    let Some(redis) = Redis::start().await else { return };
    let mut one_room = Config::for_tests();
    one_room.limits.max_rooms = 1;
    let nodes = [node_with(&redis, one_room).await, node(&redis).await];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ann = client_at(&nodes[0].url()).await;
    ann.join(params("first", "Ann")).await.expect("the first room goes to the node asked");
    // Node 1 gets a busier room (placed there: node 0 already has a peer).
    let busy = [client_at(&nodes[1].url()).await, client_at(&nodes[1].url()).await];
    for (i, c) in busy.iter().enumerate() {
        c.join(params("busy", &format!("Busy {i}"))).await.expect("busy goes to node 1");
    }
    // After a heartbeat node 0 is the less loaded (1 peer against 2), but full.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let bob = client_at(&nodes[0].url()).await;
    let e = bob.join(params("second", "Bob")).await.expect_err("node 0 is at its room limit");
    assert_eq!(wrong_node(&e).map(|m| m.url), Some(nodes[1].url()), "{e:?}");
    drop((ann, busy));
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_draining_node_takes_no_new_rooms() {
    let Some(redis) = Redis::start().await else { return };
    let nodes = nodes(&redis, 2).await;
    let mut ann = subscribed_at(&nodes[0].url()).await;
    ann.join("kept", "Ann").await;
    let drained = nodes[0].handle.drain(Duration::from_secs(60));
    // A new room asked of the draining node goes to the other one at once...
    let bob = client_at(&nodes[0].url()).await;
    let deadline = Instant::now() + Duration::from_secs(1);
    let moved = loop {
        match bob.join(params("fresh", "Bob")).await {
            Err(e) if wrong_node(&e).is_some() => break wrong_node(&e).expect("wrongNode"),
            other => assert!(Instant::now() < deadline, "a draining node took a new room: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(moved.url, nodes[1].url());
    // ... while its open room stays there, and closes when its last member leaves.
    let cid = client_at(&nodes[1].url()).await;
    let e = cid.join(params("kept", "Cid")).await.expect_err("kept stays on the draining node");
    assert_eq!(wrong_node(&e).expect("wrongNode").url, nodes[0].url());
    // Following the redirect, the draining owner admits the join to its open room (a
    // member whose connection dropped can come back nowhere else).
    let cid = client_at(&nodes[0].url()).await;
    cid.join(params("kept", "Cid")).await.expect("the draining owner admits joins to its open room");
    cid.leave().await.expect("leave");
    ann.client.leave().await.expect("leave");
    assert_eq!(tokio::time::timeout(TIMEOUT, drained).await.expect("drained"), dspeak_server::Drained::Empty);
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn the_admin_api_covers_every_node_of_the_cluster() {
    let Some(redis) = Redis::start().await else { return };
    let nodes = [node_with(&redis, secured_config()).await, node_with(&redis, secured_config()).await];
    tokio::time::sleep(Duration::from_millis(300)).await;
    // One room on each node: the second goes to the idle node.
    let _ann = nodes[0].joined_with(&claims("ann", "on-a"), "Ann").await;
    let bob = client_at(&nodes[0].url()).await;
    let token = token(&claims("bob", "on-b"));
    let e = bob.join(JoinParams { room: "on-b".into(), display_name: "Bob".into(), token: Some(token.clone()) });
    let moved = wrong_node(&e.await.expect_err("on-b goes to the idle node")).expect("wrongNode");
    assert_eq!(moved.url, nodes[1].url());
    let mut bob = nodes[1].joined_with(&claims("bob", "on-b"), "Bob").await;

    let admin = client_at(&nodes[0].url()).await;
    let deadline = Instant::now() + LEASE;
    loop {
        let listed = admin.admin_list_rooms(AdminParams { token: admin_token("*") }).await.expect("adminListRooms");
        let rooms: Vec<(String, u32)> = listed.rooms.iter().map(|r| (r.room.clone(), r.peers)).collect();
        if rooms == [("on-a".to_owned(), 1), ("on-b".to_owned(), 1)] {
            break;
        }
        assert!(Instant::now() < deadline, "node B's room is not listed on node A: {rooms:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A token for one room sees that room only, wherever it is.
    let listed = admin.admin_list_rooms(AdminParams { token: admin_token("on-b") }).await.expect("adminListRooms");
    assert_eq!(listed.rooms.iter().map(|r| r.room.as_str()).collect::<Vec<_>>(), ["on-b"]);

    // Admin actions on node B's room, called on node A, are forwarded to node B.
    let room = |room: &str| AdminRoomParams { token: admin_token("*"), room: room.into() };
    let peers = admin.admin_list_peers(room("on-b")).await.expect("forwarded adminListPeers");
    assert_eq!(peers.peers.iter().map(|p| p.display_name.as_str()).collect::<Vec<_>>(), ["Bob"]);
    let payload = serde_json::json!({"notice": "from node A"});
    let sent = AdminBroadcastParams { token: admin_token("*"), room: "on-b".into(), payload: payload.clone() };
    assert_eq!(admin.admin_broadcast(sent).await.expect("forwarded adminBroadcast").delivered, 1);
    let heard = bob.event_where("the broadcast", |e| matches!(e, dspeak_schema::Event::Broadcast { .. })).await;
    assert_eq!(heard, dspeak_schema::Event::Broadcast { from: None, payload });
    let nobody = AdminPeerParams { token: admin_token("*"), room: "on-b".into(), peer_id: "nobody".into() };
    let e = admin.admin_remove_peer(nobody).await.expect_err("no such peer on node B");
    assert_eq!(code_of::<()>(Err(e)), ErrorCode::NotFound.code());
    admin.admin_close_room(room("on-b")).await.expect("forwarded adminCloseRoom");
    nodes[1].wait_counts("node B's room closed", |c| c.rooms == 0).await;
    // A room nowhere is not found, as on a single node.
    assert_eq!(code_of(admin.admin_list_peers(room("nowhere")).await), ErrorCode::NotFound.code());
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_room_whose_lease_another_node_holds_is_given_up_and_its_members_rejoin_there() {
    let Some(redis) = Redis::start().await else { return };
    let node = node(&redis).await;
    let mut ws = RawWs::connect(&node.url()).await;
    ws.request(1, "subscribeEvents", serde_json::json!({})).await;
    let joined = ws.request(2, "join", serde_json::json!({"room": "split", "displayName": "Ann"})).await;
    assert!(joined.get("result").is_some(), "{joined}");
    // As after Redis lost its data: another (live) node took the room's lease first.
    let elsewhere = "ws://127.0.0.1:1";
    redis.cli(&["HSET", "dspeak:node:intruder", "url", elsewhere, "load", "0"]).await;
    redis.cli(&["SET", "dspeak:room:split", "intruder", "PX", "60000"]).await;
    // Within a heartbeat the member is removed, as when the room is closed...
    let end = loop {
        let message = ws.recv().await;
        if let Some(error) = message["params"].get("error") {
            break error.clone();
        }
    };
    assert_eq!(end["data"], serde_json::json!({"reason": "roomClosed"}), "{end}");
    node.wait_counts("the room is closed here", |c| c.rooms == 0).await;
    // ... and joining again leads to the room's one node.
    let again = ws.request(3, "join", serde_json::json!({"room": "split", "displayName": "Ann"})).await;
    assert_eq!(raw_code(&again), i64::from(ErrorCode::WrongNode.code()), "{again}");
    assert_eq!(again["error"]["data"], serde_json::json!({"url": elsewhere}));
    node.shutdown().await;
}

/// A `python -m dspeak_peer cluster-talk` peer entering through `urls[0]`.
fn cluster_talker(python: &str, urls: &[String], room: &str, freq: u32, seconds: u32) -> Child {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e/python");
    let mut command = Command::new(python);
    command.args(["-m", "dspeak_peer", "--url", &urls[0], "cluster-talk", "--room", room]);
    for url in &urls[1..] {
        command.args(["--also", url]);
    }
    command
        .args(["--freq", &freq.to_string(), "--duration", &seconds.to_string()])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python starts")
}

/// What one talker prints, one JSON object per line.
type Said = tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>;

fn lines(child: &mut Child) -> Said {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    rx
}

/// Waits until a talker has joined (on some node) and heard both `others` in that
/// session; returns the node it joined on.
async fn hears(said: &mut Said, others: [u32; 2], within: Duration, what: &str) -> String {
    let deadline = tokio::time::Instant::now() + within;
    let (mut node, mut heard) = (String::new(), BTreeSet::new());
    let mut log = Vec::new();
    loop {
        let line = tokio::time::timeout_at(deadline, said.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: not heard within {within:?}; said {log:?}"))
            .unwrap_or_else(|| panic!("{what}: talker ended; said {log:?}"));
        log.push(line.to_string());
        match line["event"].as_str() {
            Some("joined") => (node, heard) = (line["node"].as_str().unwrap_or_default().to_owned(), BTreeSet::new()),
            Some("heard") => {
                let f = line["freq"].as_f64().unwrap_or_default();
                if let Some(o) = others.iter().find(|o| (f - f64::from(**o)).abs() < f64::from(**o) * 0.05) {
                    heard.insert(*o);
                }
            }
            _ => {}
        }
        if heard.len() == 2 {
            return node;
        }
    }
}

#[tokio::test]
async fn pymediasoup_peers_on_three_nodes_hear_each_other_and_survive_the_owner_being_killed() {
    let Some(python) = python() else { return };
    let Some(redis) = Redis::start().await else { return };
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut binaries = Vec::new();
    for port in &ports {
        let node_url = format!("ws://127.0.0.1:{port}");
        let listen = format!("127.0.0.1:{port}");
        binaries.push(Binary::start_on(&listen, &["--redis-url", &redis.url(), "--node-url", &node_url]).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let urls: Vec<String> = binaries.iter().map(|b| b.url.clone()).collect();
    let freqs = [440, 550, 660];
    // Talker i enters through node i, then tries the others in turn.
    let mut talkers = Vec::new();
    for (i, freq) in freqs.iter().enumerate() {
        let rotated: Vec<String> = (0..3).map(|k| urls[(i + k) % 3].clone()).collect();
        let mut child = cluster_talker(&python, &rotated, "cluster-call", *freq, 90);
        let said = lines(&mut child);
        talkers.push((child, said));
        // One at a time, so that the room is placed by the first.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let others = |i: usize| -> [u32; 2] { [freqs[(i + 1) % 3], freqs[(i + 2) % 3]] };
    let mut owners = BTreeSet::new();
    for (i, (_, said)) in talkers.iter_mut().enumerate() {
        owners.insert(hears(said, others(i), Duration::from_secs(40), &format!("talker {i}")).await);
    }
    assert_eq!(owners.len(), 1, "everyone joined the room on one node: {owners:?}");
    let owner = owners.pop_first().expect("one owner");
    let killed = urls.iter().position(|u| *u == owner).expect("the owner is one of the nodes");

    binaries[killed].signal(nix::sys::signal::Signal::SIGKILL);
    let started = Instant::now();
    let mut owners = BTreeSet::new();
    for (i, (_, said)) in talkers.iter_mut().enumerate() {
        let left = Duration::from_secs(15).saturating_sub(started.elapsed());
        owners.insert(hears(said, others(i), left, &format!("talker {i} after the kill")).await);
    }
    let recovered = started.elapsed();
    assert_eq!(owners.len(), 1, "everyone rejoined on one node: {owners:?}");
    assert!(!owners.contains(&owner), "the room moved off the killed node");
    eprintln!("rejoined and heard each other {recovered:?} after kill -9 of the owner");
    drop(talkers);
}
