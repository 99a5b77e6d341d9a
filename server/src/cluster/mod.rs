//! Cluster mode (`--redis-url`): many nodes behind one address, each room hosted by one
//! node, placed and found through Redis.
//!
//! [`Cluster`] is the small handle the rest of the server uses: `join` asks
//! [`Cluster::place`] before the peer is added (here, or `wrongNode` with the owner's
//! URL), and the session layer tells [`Cluster::released`] when a room closes. The Redis
//! side — the node registry, the room leases and their scripts — lives in `redis.rs`,
//! on a thread of its own, so a slow or dead Redis never holds up the signaling runtime.
//! Redis holds only node records and the room → node mapping: nothing per session,
//! per event or per packet.

mod redis;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use dspeak_schema::admin::RoomSummary;

use crate::StartError;
use crate::config::ClusterArgs;
use crate::error::PlacementError;

/// How often a node writes its record and renews the leases of its rooms.
const HEARTBEAT: Duration = Duration::from_secs(2);

/// How long a node record and a room lease live without a heartbeat: a node that stops
/// (or is killed) loses its rooms after this.
const LEASE: Duration = Duration::from_secs(6);

/// How long a forwarded admin call may take, there and back.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(8);

/// How long one Redis command may take before the node counts Redis as down.
const REDIS_TIMEOUT: Duration = Duration::from_millis(1500);

/// What a node publishes about itself with every heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LocalState {
    /// The rooms open on this node (their leases are renewed), as `adminListRooms`
    /// lists them; other nodes read them from this node's record.
    pub(crate) rooms: Vec<RoomSummary>,
    /// Joined peers.
    pub(crate) peers: usize,
    /// Consumers in the media engine.
    pub(crate) consumers: usize,
    /// Draining: the node takes no new rooms.
    pub(crate) draining: bool,
    /// Its `--max-rooms`: placement skips it once it has that many.
    pub(crate) max_rooms: usize,
}

impl LocalState {
    /// The placement score: rooms go to the live node with the lowest.
    fn load(&self) -> usize {
        self.peers + self.consumers
    }
}

/// This node as the cluster thread sees it: its state for each heartbeat, what to do
/// with a room whose lease another node holds, and how to answer an admin call another
/// node forwards.
pub(crate) trait Local: Send + Sync + 'static {
    /// This node's state now; `None` once the server is gone.
    fn state(&self) -> Option<LocalState>;
    /// Another node holds the lease of `room`, open here (Redis lost its data and the
    /// room was placed again before this node took it back): its members are removed,
    /// so that they join again and reach the one owner.
    fn lost(&self, room: &str);
    /// Answers an admin call on a room of this node that another node forwarded: the
    /// JSON-RPC answer's `{"result": …}` or `{"error": …}`.
    fn admin(&self, method: String, params: serde_json::Value) -> BoxFuture<'static, serde_json::Value>;
}

/// The [`Local`] the cluster thread keeps.
pub(crate) type StateSource = Arc<dyn Local>;

/// What became of an admin call on a room, asked of the cluster.
#[derive(Debug)]
pub(crate) enum Forwarded {
    /// The room is not another node's: handle the call here.
    Local,
    /// The room's node answered (`{"result": …}` or `{"error": …}`).
    Answer(serde_json::Value),
    /// The room's node (or Redis) did not answer in time.
    Unreachable,
}

/// Where a room is hosted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// On this node: go on with the join.
    Here,
    /// On the node with this `--node-url`.
    Elsewhere(String),
}

/// A request to the cluster thread.
enum Command {
    /// Where `room` is hosted (placing it when it is nowhere); `local` is whether it is
    /// open on this node now (kept when Redis is down).
    Place { room: String, local: bool, reply: oneshot::Sender<Result<Placement, PlacementError>> },
    /// `room` closed on this node: give up its lease.
    Released(String),
    /// Where the heartbeat reads this node's state from.
    Attach(StateSource),
    /// Forwards an admin call on `room` to the room's node, if that is another one.
    Forward { room: String, method: String, params: serde_json::Value, reply: oneshot::Sender<Forwarded> },
    /// Beat now (the node started draining: it takes no new rooms from now on).
    Beat,
    /// The rooms of the other live nodes, as of their last heartbeat.
    OtherRooms(oneshot::Sender<Option<Vec<RoomSummary>>>),
    /// The server stops: deregister, end the thread, then answer.
    Stop(oneshot::Sender<()>),
}

/// The handle to the cluster thread (cheap to clone).
#[derive(Clone, Debug)]
pub(crate) struct Cluster {
    commands: mpsc::UnboundedSender<Command>,
    node_id: Arc<str>,
    /// The last heartbeat did not reach Redis (new rooms are refused meanwhile).
    unreachable: Arc<AtomicBool>,
}

/// The cluster settings, checked: both flags, a parsable Redis URL.
pub(crate) struct Settings {
    redis: ::redis::Client,
    node_url: String,
}

/// Checks the cluster flags: `None` without `--redis-url` (a single node).
pub(crate) fn settings(args: &ClusterArgs) -> Result<Option<Settings>, StartError> {
    let Some(redis_url) = &args.redis_url else {
        if args.node_url.is_some() {
            return Err(StartError::Config("--node-url is only used in cluster mode: set --redis-url too".into()));
        }
        return Ok(None);
    };
    let node_url = args.node_url.clone().ok_or_else(|| {
        StartError::Config(
            "cluster mode (--redis-url) needs --node-url (or DSPEAK_NODE_URL): the WebSocket URL clients use \
             to reach this node, e.g. wss://node-a.example:443"
                .into(),
        )
    })?;
    if !(node_url.starts_with("ws://") || node_url.starts_with("wss://")) {
        return Err(StartError::Config(format!("--node-url must be a ws:// or wss:// URL, not `{node_url}`")));
    }
    let redis = ::redis::Client::open(redis_url.as_str())
        .map_err(|e| StartError::Config(format!("--redis-url `{redis_url}` is not a Redis URL: {e}")))?;
    Ok(Some(Settings { redis, node_url }))
}

impl Cluster {
    /// Starts the cluster thread for a node with these settings. Redis is connected
    /// lazily: a node starts (and serves nothing new) while Redis is down.
    pub(crate) fn start(settings: Settings) -> Result<Cluster, StartError> {
        let node_id: Arc<str> = uuid::Uuid::new_v4().to_string().into();
        let (commands, rx) = mpsc::unbounded_channel();
        let node = redis::Node { id: node_id.to_string(), url: settings.node_url };
        let unreachable = Arc::new(AtomicBool::new(false));
        let seen = unreachable.clone();
        std::thread::Builder::new()
            .name("dspeak-cluster".into())
            .spawn(move || redis::run(settings.redis, node, rx, seen))?;
        Ok(Cluster { commands, node_id, unreachable })
    }

    /// Whether the last heartbeat failed to reach Redis: the node then refuses new
    /// rooms, so it reports itself not ready.
    pub(crate) fn redis_unreachable(&self) -> bool {
        self.unreachable.load(Ordering::Relaxed)
    }

    /// This node's id in the registry.
    pub(crate) fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Gives the heartbeat its source of this node's state.
    pub(crate) fn attach(&self, source: StateSource) {
        let _ = self.commands.send(Command::Attach(source));
    }

    /// Where `room` is hosted; places it (on the least loaded live node, preferring this
    /// one on a tie) when no node has it. `local`: the room is open here now.
    pub(crate) async fn place(&self, room: &str, local: bool) -> Result<Placement, PlacementError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Place { room: room.to_owned(), local, reply };
        if self.commands.send(command).is_err() {
            return Err(PlacementError::RedisDown(room.to_owned()));
        }
        answer.await.unwrap_or_else(|_| Err(PlacementError::RedisDown(room.to_owned())))
    }

    /// The rooms the other live nodes host, as of their last heartbeat (at most
    /// `HEARTBEAT` old); `None` while Redis cannot be reached.
    pub(crate) async fn other_rooms(&self) -> Option<Vec<RoomSummary>> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::OtherRooms(reply)).ok()?;
        answer.await.ok().flatten()
    }

    /// Publishes this node's state now rather than at the next heartbeat (e.g. it
    /// started draining).
    pub(crate) fn beat_now(&self) {
        let _ = self.commands.send(Command::Beat);
    }

    /// An admin call on `room`: when another node hosts it, the call is sent to that
    /// node over Redis pub/sub and its answer returned; `Local` when the room is this
    /// node's or nowhere.
    pub(crate) async fn forward(&self, room: &str, method: &str, params: serde_json::Value) -> Forwarded {
        let (reply, answer) = oneshot::channel();
        let command = Command::Forward { room: room.to_owned(), method: method.to_owned(), params, reply };
        if self.commands.send(command).is_err() {
            return Forwarded::Unreachable;
        }
        answer.await.unwrap_or(Forwarded::Unreachable)
    }

    /// `room` closed on this node: its lease is given up at once.
    pub(crate) fn released(&self, room: &str) {
        let _ = self.commands.send(Command::Released(room.to_owned()));
    }

    /// Deregisters the node (its leases are given up, so its rooms can be placed again
    /// at once) and ends the thread; waits for it at most as long as a Redis command.
    pub(crate) async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.commands.send(Command::Stop(done)).is_ok() {
            let _ = tokio::time::timeout(REDIS_TIMEOUT * 2, stopped).await;
        }
    }
}
