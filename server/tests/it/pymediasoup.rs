//! Real WebRTC clients nobody here wrote, unmodified: `pymediasoup` + `aiortc` in
//! Python (`e2e/python`) against a server on port 0 whose media sockets bind the
//! wildcard address as by default, then every engine count back to zero.
//!
//! aioice never offers a loopback candidate, so on a machine with another interface
//! its checks go from that interface's address to the announced 127.0.0.1: the answers
//! must come back from 127.0.0.1 (symmetric), or aioice drops them.
//!
//! Needs the e2e virtualenv: `DSPEAK_PYTHON` names its interpreter (`.ci/run` sets
//! it up). Without it the test is skipped locally and fails under CI.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use dspeak_server::{Config, Counts};

use crate::support::*;

pub fn python() -> Option<String> {
    match std::env::var("DSPEAK_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var_os("CI").is_some() => {
            panic!("DSPEAK_PYTHON must name the e2e venv's python (see README: Python e2e)")
        }
        _ => {
            eprintln!("skipping pymediasoup e2e: set DSPEAK_PYTHON to the e2e venv's python");
            None
        }
    }
}

/// `config` with the media sockets bound to the wildcard address, as by default, and
/// two media workers, so that a room's transports land on both and its media crosses
/// between them, as on a multi-core server.
fn wildcard(config: Config) -> Config {
    Config { rtc_listen_ip: Ipv4Addr::UNSPECIFIED.into(), workers: 2, ..config }
}

/// Runs one pytest file of `e2e/python` with `env`; fails unless it passes in time.
async fn pytest(python: String, file: &str, env: &[(&str, String)]) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../e2e/python");
    let run = tokio::process::Command::new(python)
        .args(["-m", "pytest", "-s", "-q", "-p", "no:cacheprovider", file])
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .kill_on_drop(true)
        .status();
    let status = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the Python e2e finishes within 4 minutes")
        .expect("python starts");
    assert!(status.success(), "pymediasoup e2e {file} failed: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymediasoup_peers_hear_each_other_and_everything_is_released() {
    let Some(python) = python() else { return };
    let server = spawn_server_with(wildcard(Config::for_tests())).await;
    pytest(python, "test_e2e.py", &[("DSPEAK_URL", server.url())]).await;
    server
        .wait_counts("every session, room, transport, producer and consumer released", |c| *c == Counts::default())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_muted_pymediasoup_peer_is_silent_and_cannot_unmute_itself() {
    let Some(python) = python() else { return };
    let server = spawn_server_with(wildcard(secured_config())).await;
    let room = "server-mute";
    let env = [
        ("DSPEAK_URL", server.url()),
        ("DSPEAK_ROOM", room.to_owned()),
        ("DSPEAK_TOKEN_A", token(&claims("alice", room))),
        ("DSPEAK_TOKEN_B", token(&claims("bob", room))),
        ("DSPEAK_ADMIN_TOKEN", admin_token(room)),
    ];
    pytest(python, "test_server_mute.py", &env).await;
    server.wait_counts("everything released", |c| *c == Counts::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deafened_pymediasoup_peer_receives_nothing_until_undeafened() {
    let Some(python) = python() else { return };
    let server = spawn_server_with(wildcard(Config::for_tests())).await;
    pytest(python, "test_voice_state.py", &[("DSPEAK_URL", server.url())]).await;
    server.wait_counts("everything released", |c| *c == Counts::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pymediasoup_peer_whose_websocket_is_reset_resumes_and_keeps_hearing() {
    let Some(python) = python() else { return };
    let config = Config {
        resume_grace: Duration::from_secs(20),
        metrics_listen: Some((Ipv4Addr::LOCALHOST, 0).into()),
        ..Config::for_tests()
    };
    let server = spawn_server_with(wildcard(config)).await;
    let metrics = format!("http://{}/metrics", server.handle.metrics_addr().expect("metrics listener"));
    pytest(python, "test_resume.py", &[("DSPEAK_URL", server.url()), ("DSPEAK_METRICS", metrics)]).await;
    server.wait_counts("everything released", |c| *c == Counts::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_speaker_follows_the_pymediasoup_peer_that_speaks() {
    let Some(python) = python() else { return };
    let server = spawn_server_with(wildcard(Config::for_tests())).await;
    pytest(python, "test_speaker.py", &[("DSPEAK_URL", server.url())]).await;
    server.wait_counts("everything released", |c| *c == Counts::default()).await;
}
