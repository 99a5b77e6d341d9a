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

use std::path::PathBuf;
use std::time::Duration;

use std::net::Ipv4Addr;

use dspeak_server::{Config, Counts};

use crate::support::*;

fn python() -> Option<String> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymediasoup_peers_hear_each_other_and_everything_is_released() {
    let Some(python) = python() else { return };
    let server = spawn_server_with(Config { rtc_listen_ip: Ipv4Addr::UNSPECIFIED.into(), ..Config::for_tests() }).await;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../e2e/python");
    let run = tokio::process::Command::new(python)
        .args(["-m", "pytest", "-s", "-q", "-p", "no:cacheprovider", "test_e2e.py"])
        .current_dir(dir)
        .env("DSPEAK_URL", server.url())
        .kill_on_drop(true)
        .status();
    let status = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the Python e2e finishes within 4 minutes")
        .expect("python starts");
    assert!(status.success(), "pymediasoup e2e failed: {status}");
    server
        .wait_counts("every session, room, transport, producer and consumer released", |c| *c == Counts::default())
        .await;
}
