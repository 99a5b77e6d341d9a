//! The Redis side of cluster mode, on its own thread and runtime: the node registry
//! (a heartbeat every `HEARTBEAT`), room placement and room leases, each one Lua script
//! so that it is atomic in Redis.
//!
//! Keys: `dspeak:nodes` (the set of node ids), `dspeak:node:<id>` (a hash: `url`,
//! `load`, `rooms`, `max_rooms`, `peers`, `consumers`, `draining`, and `summaries`, its rooms as
//! `adminListRooms` lists them, in JSON; expires after `LEASE`) and
//! `dspeak:room:<name>` (the owner's node id; a lease the owner renews with every
//! heartbeat, so a dead node's rooms are free after `LEASE`).
//!
//! Admin calls on a room of another node go over pub/sub: the request to
//! `dspeak:admin:<owner id>` (`{id, from, method, params}`), the answer to
//! `dspeak:reply:<asking node id>` (`{id, answer}`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use dspeak_schema::admin::RoomSummary;
use futures_util::StreamExt;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::{Command, FORWARD_TIMEOUT, Forwarded, HEARTBEAT, LEASE, LocalState, Placement, REDIS_TIMEOUT, StateSource};
use crate::error::PlacementError;

/// This node, as the registry knows it.
pub(super) struct Node {
    pub(super) id: String,
    pub(super) url: String,
}

/// Finds the owner of room `ARGV[1]`, or places it on the live node with the lowest
/// load that takes new rooms (not draining, fewer rooms than its `--max-rooms`;
/// `ARGV[2]`, this node, wins a tie) with a lease of `ARGV[3]` ms. A room whose owner's
/// record has expired is placed again. Returns `{id, url}`, or nothing when no node
/// takes new rooms. The chosen node's load and room count go up by one, so a burst of
/// placements between two heartbeats spreads and does not overfill a node.
static PLACE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local key = 'dspeak:room:' .. ARGV[1]
local owner = redis.call('GET', key)
if owner then
  local url = redis.call('HGET', 'dspeak:node:' .. owner, 'url')
  if url then return {owner, url} end
end
local best, best_load, best_url
for _, id in ipairs(redis.call('SMEMBERS', 'dspeak:nodes')) do
  local n = redis.call('HMGET', 'dspeak:node:' .. id, 'url', 'load', 'draining', 'rooms', 'max_rooms')
  if not n[1] then
    redis.call('SREM', 'dspeak:nodes', id)
  elseif n[3] ~= '1' and (tonumber(n[4]) or 0) < (tonumber(n[5]) or math.huge) then
    local load = tonumber(n[2]) or 0
    if best == nil or load < best_load or (load == best_load and id == ARGV[2]) then
      best, best_load, best_url = id, load, n[1]
    end
  end
end
if not best then return false end
redis.call('SET', key, best, 'PX', ARGV[3])
redis.call('HINCRBY', 'dspeak:node:' .. best, 'load', 1)
redis.call('HINCRBY', 'dspeak:node:' .. best, 'rooms', 1)
return {best, best_url}
",
    )
});

/// The heartbeat of node `ARGV[1]`: writes its record (`ARGV[2]` url, `ARGV[3]` load,
/// `ARGV[4]` peers, `ARGV[5]` consumers, `ARGV[6]` draining, `ARGV[8]` room summaries,
/// `ARGV[9]` its `--max-rooms`, and its room count) with a lifetime of `ARGV[7]` ms,
/// and renews the lease of each room from `ARGV[10]` on,
/// taking back any that has none (after Redis lost its data). Returns the rooms another
/// node owns.
static HEARTBEAT_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local id, ttl = ARGV[1], ARGV[7]
local node = 'dspeak:node:' .. id
redis.call('HSET', node, 'url', ARGV[2], 'load', ARGV[3], 'peers', ARGV[4], 'consumers', ARGV[5],
  'draining', ARGV[6], 'summaries', ARGV[8], 'max_rooms', ARGV[9], 'rooms', #ARGV - 9)
redis.call('PEXPIRE', node, ttl)
redis.call('SADD', 'dspeak:nodes', id)
local lost = {}
for i = 10, #ARGV do
  local key = 'dspeak:room:' .. ARGV[i]
  local owner = redis.call('GET', key)
  if owner == false or owner == id then
    redis.call('SET', key, id, 'PX', ttl)
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
",
    )
});

/// The room summaries (JSON) of every live node but `ARGV[1]`.
static OTHER_ROOMS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', 'dspeak:nodes')) do
  if id ~= ARGV[1] then
    local summaries = redis.call('HGET', 'dspeak:node:' .. id, 'summaries')
    if summaries then table.insert(out, summaries) end
  end
end
return out
",
    )
});

/// Gives up room `ARGV[2]` if node `ARGV[1]` owns it.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local key = 'dspeak:room:' .. ARGV[2]
if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
return 1
",
    )
});

/// Deregisters node `ARGV[1]` and gives up the rooms it owns: those from `ARGV[2]` on
/// and those of its last heartbeat (rooms closed since may not be released yet).
static DEREGISTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local id = ARGV[1]
local node = 'dspeak:node:' .. id
local rooms = {}
for i = 2, #ARGV do table.insert(rooms, ARGV[i]) end
local summaries = redis.call('HGET', node, 'summaries')
if summaries then
  for _, r in ipairs(cjson.decode(summaries)) do table.insert(rooms, r.room) end
end
redis.call('DEL', node)
redis.call('SREM', 'dspeak:nodes', id)
for _, room in ipairs(rooms) do
  local key = 'dspeak:room:' .. room
  if redis.call('GET', key) == id then redis.call('DEL', key) end
end
return 1
",
    )
});

/// The cluster thread: serves `commands` and beats until `Stop` or until the server's
/// handle is gone.
pub(super) fn run(
    client: redis::Client,
    node: Node,
    mut commands: mpsc::UnboundedReceiver<Command>,
    unreachable: Arc<AtomicBool>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cluster: cannot start its runtime; every new room is refused");
            unreachable.store(true, Ordering::Relaxed);
            return;
        }
    };
    runtime.block_on(async move {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let redis = match ConnectionManager::new_lazy_with_config(client.clone(), config) {
            Ok(redis) => redis,
            Err(e) => {
                tracing::error!(error = %e, "cluster: cannot set up the Redis connection; every new room is refused");
                unreachable.store(true, Ordering::Relaxed);
                return;
            }
        };
        let relay = Arc::new(Relay::default());
        let mut node = Beats { redis, node, source: None, up: None, unreachable };
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Place { room, local, reply }) => {
                        let redis = node.redis.clone();
                        let id = node.node.id.clone();
                        tokio::spawn(async move {
                            let _ = reply.send(place(redis, &id, &room, local).await);
                        });
                    }
                    Some(Command::Released(room)) => {
                        let mut redis = node.redis.clone();
                        let id = node.node.id.clone();
                        tokio::spawn(async move {
                            let released: redis::RedisResult<i64> =
                                RELEASE.arg(&id).arg(&room).invoke_async(&mut redis).await;
                            if let Err(e) = released {
                                tracing::debug!(room, error = %e, "cluster: lease not released (it expires)");
                            }
                        });
                    }
                    Some(Command::OtherRooms(reply)) => {
                        let redis = node.redis.clone();
                        let id = node.node.id.clone();
                        tokio::spawn(async move {
                            let _ = reply.send(other_rooms(redis, &id).await);
                        });
                    }
                    Some(Command::Forward { room, method, params, reply }) => {
                        let (redis, id, relay) = (node.redis.clone(), node.node.id.clone(), relay.clone());
                        tokio::spawn(async move {
                            let _ = reply.send(forward(redis, &id, &relay, &room, method, params).await);
                        });
                    }
                    Some(Command::Beat) => node.beat().await,
                    Some(Command::Attach(source)) => {
                        let (redis, id) = (node.redis.clone(), node.node.id.clone());
                        tokio::spawn(listen(client.clone(), redis, id, source.clone(), relay.clone()));
                        node.source = Some(source);
                        node.beat().await;
                    }
                    Some(Command::Stop(done)) => {
                        node.deregister().await;
                        let _ = done.send(());
                        return;
                    }
                    None => break,
                },
                _ = tick.tick() => node.beat().await,
            }
        }
        node.deregister().await;
    });
}

/// The admin calls this node forwarded and waits an answer for, by request id.
#[derive(Default)]
struct Relay {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Value>>>,
}

impl Relay {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Value>>> {
        // A plain map: a panic cannot leave it half-changed.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self) -> (u64, oneshot::Receiver<Value>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting().insert(id, tx);
        (id, rx)
    }

    fn forget(&self, id: u64) {
        self.waiting().remove(&id);
    }

    /// An answer arrived on this node's reply channel.
    fn answered(&self, payload: &str) {
        let Ok(reply) = serde_json::from_str::<Value>(payload) else { return };
        let Some(id) = reply["id"].as_u64() else { return };
        if let Some(waiter) = self.waiting().remove(&id) {
            let _ = waiter.send(reply["answer"].clone());
        }
    }
}

/// Sends an admin call on `room` to the room's node when that is another one, and
/// waits for its answer.
async fn forward(
    mut redis: ConnectionManager,
    id: &str,
    relay: &Relay,
    room: &str,
    method: String,
    params: Value,
) -> Forwarded {
    let owner: redis::RedisResult<Option<String>> =
        redis::cmd("GET").arg(format!("dspeak:room:{room}")).query_async(&mut redis).await;
    let owner = match owner {
        Ok(Some(owner)) if owner != id => owner,
        Ok(_) => return Forwarded::Local,
        Err(e) => {
            tracing::warn!(room, error = %e, "cluster: Redis unreachable; admin call not forwarded");
            return Forwarded::Unreachable;
        }
    };
    let (request, answer) = relay.register();
    let message = json!({ "id": request, "from": id, "method": method, "params": params }).to_string();
    let receivers: redis::RedisResult<i64> =
        redis::cmd("PUBLISH").arg(format!("dspeak:admin:{owner}")).arg(message).query_async(&mut redis).await;
    if !matches!(receivers, Ok(n) if n > 0) {
        relay.forget(request);
        tracing::warn!(room, owner, "cluster: the room's node does not listen; admin call not forwarded");
        return Forwarded::Unreachable;
    }
    match tokio::time::timeout(FORWARD_TIMEOUT, answer).await {
        Ok(Ok(answer)) => Forwarded::Answer(answer),
        _ => {
            relay.forget(request);
            tracing::warn!(room, owner, "cluster: the room's node did not answer a forwarded admin call");
            Forwarded::Unreachable
        }
    }
}

/// Listens on this node's channels (reconnecting while Redis is away): admin calls
/// other nodes forward, answered by `local`, and the answers to the calls this node
/// forwarded.
async fn listen(client: redis::Client, redis: ConnectionManager, id: String, local: StateSource, relay: Arc<Relay>) {
    let (requests, replies) = (format!("dspeak:admin:{id}"), format!("dspeak:reply:{id}"));
    loop {
        let subscribed = tokio::time::timeout(REDIS_TIMEOUT, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&[&requests, &replies]).await?;
            redis::RedisResult::Ok(pubsub)
        })
        .await;
        if let Ok(Ok(mut pubsub)) = subscribed {
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let Ok(payload) = message.get_payload::<String>() else { continue };
                if message.get_channel_name() == replies {
                    relay.answered(&payload);
                } else {
                    tokio::spawn(answer(redis.clone(), local.clone(), payload));
                }
            }
        }
        if local.state().is_none() {
            return; // the server is gone
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Runs an admin call another node forwarded and publishes the answer to its channel.
async fn answer(mut redis: ConnectionManager, local: StateSource, payload: String) {
    let Ok(request) = serde_json::from_str::<Value>(&payload) else { return };
    let (Some(id), Some(from), Some(method)) =
        (request["id"].as_u64(), request["from"].as_str(), request["method"].as_str())
    else {
        return;
    };
    let answer = local.admin(method.to_owned(), request["params"].clone()).await;
    let reply = json!({ "id": id, "answer": answer }).to_string();
    let sent: redis::RedisResult<i64> =
        redis::cmd("PUBLISH").arg(format!("dspeak:reply:{from}")).arg(reply).query_async(&mut redis).await;
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cluster: answer to a forwarded admin call not sent");
    }
}

/// Answers `place` from Redis. When Redis is down, a room open here stays here.
async fn place(mut redis: ConnectionManager, id: &str, room: &str, local: bool) -> Result<Placement, PlacementError> {
    let placed: redis::RedisResult<Option<(String, String)>> =
        PLACE.arg(room).arg(id).arg(LEASE.as_millis() as u64).invoke_async(&mut redis).await;
    match placed {
        Ok(Some((owner, _))) if owner == id => Ok(Placement::Here),
        Ok(Some((_, url))) => Ok(Placement::Elsewhere(url)),
        Ok(None) => Err(PlacementError::NoNode(room.to_owned())),
        Err(e) if local => {
            tracing::warn!(room, error = %e, "cluster: Redis unreachable; the room is open here, so it stays here");
            Ok(Placement::Here)
        }
        Err(e) => {
            tracing::warn!(room, error = %e, "cluster: Redis unreachable; new room refused");
            Err(PlacementError::RedisDown(room.to_owned()))
        }
    }
}

/// The rooms of the other live nodes, from their records; `None` if Redis fails.
async fn other_rooms(mut redis: ConnectionManager, id: &str) -> Option<Vec<RoomSummary>> {
    let lists: redis::RedisResult<Vec<String>> = OTHER_ROOMS.arg(id).invoke_async(&mut redis).await;
    match lists {
        Ok(lists) => {
            Some(lists.iter().filter_map(|l| serde_json::from_str::<Vec<RoomSummary>>(l).ok()).flatten().collect())
        }
        Err(e) => {
            tracing::warn!(error = %e, "cluster: Redis unreachable; listing this node's rooms only");
            None
        }
    }
}

/// The heartbeat's state: the connection, this node, and whether Redis answered last.
struct Beats {
    redis: ConnectionManager,
    node: Node,
    source: Option<StateSource>,
    up: Option<bool>,
    /// Shared with the handle: the last heartbeat failed.
    unreachable: Arc<AtomicBool>,
}

impl Beats {
    /// This node's state now (`None` before `attach` or once the server is gone).
    fn state(&self) -> Option<LocalState> {
        self.source.as_ref().and_then(|source| source.state())
    }

    /// Notes whether Redis answered the heartbeat, for the handle too; returns whether
    /// that changed (or is the first answer).
    fn answered(&mut self, up: bool) -> bool {
        self.unreachable.store(!up, Ordering::Relaxed);
        self.up.replace(up) != Some(up)
    }

    /// Writes the node record and renews the room leases; logs when Redis goes away
    /// and comes back, and any room another node took.
    async fn beat(&mut self) {
        let Some(state) = self.state() else { return };
        let mut script = HEARTBEAT_SCRIPT.prepare_invoke();
        script
            .arg(&self.node.id)
            .arg(&self.node.url)
            .arg(state.load())
            .arg(state.peers)
            .arg(state.consumers)
            .arg(u8::from(state.draining))
            .arg(LEASE.as_millis() as u64)
            .arg(serde_json::to_string(&state.rooms).unwrap_or_else(|_| "[]".into()))
            .arg(state.max_rooms)
            .arg(state.rooms.iter().map(|r| r.room.as_str()).collect::<Vec<_>>());
        let result: redis::RedisResult<Vec<String>> = script.invoke_async(&mut self.redis).await;
        match result {
            Ok(lost) => {
                if self.answered(true) {
                    tracing::info!(node = %self.node.id, url = %self.node.url, rooms = state.rooms.len(), "cluster: registered in Redis");
                }
                for room in lost {
                    tracing::error!(
                        room,
                        "cluster: another node holds the lease of a room open here; its members are removed"
                    );
                    if let Some(source) = &self.source {
                        source.lost(&room);
                    }
                }
            }
            Err(e) => {
                if self.answered(false) {
                    tracing::warn!(error = %e, "cluster: Redis unreachable; open rooms keep working, new rooms are refused");
                }
            }
        }
    }

    /// Removes the node record and gives up its rooms' leases (best effort: they
    /// expire anyway).
    async fn deregister(&mut self) {
        let rooms: Vec<String> =
            self.state().map(|s| s.rooms.into_iter().map(|r| r.room).collect()).unwrap_or_default();
        let mut script = DEREGISTER.prepare_invoke();
        script.arg(&self.node.id).arg(&rooms);
        let done: redis::RedisResult<i64> = script.invoke_async(&mut self.redis).await;
        if let Err(e) = done {
            tracing::debug!(error = %e, "cluster: not deregistered (the record expires)");
        }
    }
}
