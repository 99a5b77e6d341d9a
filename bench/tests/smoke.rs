//! The load tool's smoke run, as a test: every scenario at small N must be correct
//! (every message delivered, no packet lost). Ignored by default because it wants
//! quiet cores; `scripts/test.sh` runs it on its own with `--ignored`.

use std::process::Command;

#[test]
#[ignore = "run on its own by scripts/test.sh: cargo test --workspace --all-targets -- --ignored smoke"]
fn smoke() {
    let status = Command::new(env!("CARGO_BIN_EXE_dspeak-bench"))
        .arg("smoke")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .status()
        .expect("dspeak-bench starts");
    assert!(status.success(), "dspeak-bench smoke failed: {status}");
}
