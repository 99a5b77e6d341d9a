//! The deployment files in `deploy/` and the configuration commands, checked against
//! the real binary: the Dockerfile's structure (no container engine here), the systemd
//! unit with `systemd-analyze verify` when it is installed, the example configuration
//! with `dspeak check`, and how a bad configuration fails.

use std::collections::BTreeSet;
use std::process::{Command, Output};

use clap::Args;
use dspeak_server::Config;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{DEPLOY}/{name}")).unwrap_or_else(|e| panic!("deploy/{name}: {e}"))
}

/// Runs `dspeak` with `args` and only the environment given.
fn dspeak(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dspeak"));
    cmd.args(args).env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    cmd.envs(env.iter().copied());
    cmd.output().expect("dspeak runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every `DSPEAK_*` variable the server reads, from its clap definitions.
fn known_env() -> BTreeSet<String> {
    let command = Config::augment_args(clap::Command::new("dspeak"));
    command.get_arguments().filter_map(|a| a.get_env()).map(|e| e.to_string_lossy().into_owned()).collect()
}

/// Dockerfile instructions: (keyword, arguments), comments dropped, continuations joined.
fn instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                let (keyword, rest) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
                out.push((keyword.to_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    assert!(current.is_empty(), "the Dockerfile ends inside a continued line");
    out
}

#[test]
fn the_dockerfile_builds_in_rust_and_runs_slim_as_a_non_root_user() {
    let all = instructions(&read("Dockerfile"));
    const KNOWN: &[&str] = &[
        "FROM",
        "RUN",
        "COPY",
        "ENV",
        "WORKDIR",
        "USER",
        "EXPOSE",
        "HEALTHCHECK",
        "STOPSIGNAL",
        "ENTRYPOINT",
        "CMD",
        "ARG",
        "LABEL",
    ];
    for (keyword, _) in &all {
        assert!(KNOWN.contains(&keyword.as_str()), "unknown Dockerfile instruction {keyword}");
    }
    let stages: Vec<usize> = all.iter().enumerate().filter(|(_, (k, _))| k == "FROM").map(|(i, _)| i).collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let build = &all[stages[0]].1;
    assert!(build.starts_with("rust:") && build.ends_with(" AS build"), "build stage: FROM {build}");
    let runtime_from = &all[stages[1]].1;
    assert!(runtime_from.starts_with("debian:") && runtime_from.contains("-slim"), "runtime: FROM {runtime_from}");
    let runtime = &all[stages[1]..];
    let get = |keyword: &str| runtime.iter().filter(|(k, _)| k == keyword).map(|(_, v)| v.as_str()).collect::<Vec<_>>();

    assert!(get("COPY").iter().any(|c| c.starts_with("--from=build ") && c.contains("dspeak")), "copies the binary");
    let user = get("USER");
    assert_eq!(user.len(), 1, "one USER in the runtime stage");
    assert!(!["root", "0", "root:root", "0:0"].contains(&user[0]), "runs as {}", user[0]);
    let user_at = runtime.iter().position(|(k, _)| k == "USER").unwrap();
    let entry_at = runtime.iter().position(|(k, _)| k == "ENTRYPOINT").expect("an ENTRYPOINT");
    assert!(user_at < entry_at, "USER comes before ENTRYPOINT");

    let exposed: Vec<&str> = get("EXPOSE").iter().flat_map(|e| e.split_whitespace()).collect();
    assert!(exposed.contains(&"8080/tcp"), "the WebSocket port: {exposed:?}");
    assert!(exposed.iter().any(|p| p.starts_with("40000") && p.ends_with("/udp")), "the media ports: {exposed:?}");
    assert!(exposed.iter().any(|p| p.starts_with("40000") && p.ends_with("/tcp")), "ICE-TCP ports: {exposed:?}");

    let health = get("HEALTHCHECK");
    assert_eq!(health.len(), 1);
    let cmd = health[0].split_once("CMD ").expect("HEALTHCHECK … CMD [...]").1;
    let cmd: Vec<String> = serde_json::from_str(cmd).expect("the exec (JSON) form");
    assert_eq!(cmd, ["dspeak", "health"], "probes /healthz with the binary itself (no curl in the image)");
    let entry: Vec<String> = serde_json::from_str(get("ENTRYPOINT")[0]).expect("the exec (JSON) form");
    assert_eq!(entry, ["dspeak"]);
    assert_eq!(get("STOPSIGNAL"), ["SIGTERM"], "SIGTERM drains");

    // The environment it sets is the server's, and the configuration it copies exists.
    let known = known_env();
    for env in get("ENV") {
        for pair in env.split_whitespace() {
            let name = pair.split('=').next().unwrap();
            assert!(known.contains(name), "ENV {name} is not a dspeak variable; known: {known:?}");
        }
    }
    for copy in get("COPY").iter().filter(|c| !c.starts_with("--from")) {
        let source = copy.split_whitespace().next().unwrap();
        assert!(std::path::Path::new(&format!("{DEPLOY}/../{source}")).exists(), "COPY {source}: missing");
    }
    // `dspeak health` exists and fails clearly when nothing listens.
    let probe = dspeak(&["health", "--listen", "127.0.0.1:1"], &[]);
    assert_eq!(probe.status.code(), Some(1));
    assert!(text(&probe.stderr).contains("unhealthy"), "{}", text(&probe.stderr));
}

#[test]
fn the_compose_files_set_only_dspeak_variables() {
    let known = known_env();
    for file in ["docker-compose.yml", "docker-compose.cluster.yml"] {
        let compose = read(file);
        let used: BTreeSet<&str> = compose
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("DSPEAK_"))
            .collect();
        assert!(used.contains("DSPEAK_AUTH_SECRET") && used.contains("DSPEAK_ANNOUNCED_ADDRESS"), "{file}: {used:?}");
        for name in &used {
            assert!(known.contains(*name), "{file}: {name} is not a dspeak variable");
        }
        assert!(compose.contains("dockerfile: deploy/Dockerfile"), "{file}");
        assert!(compose.contains("stop_grace_period"), "{file}: docker must wait for the drain");
        if file.contains("cluster") {
            assert!(used.contains("DSPEAK_REDIS_URL") && used.contains("DSPEAK_NODE_URL"), "{file}: {used:?}");
        }
    }
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = read("dspeak.service");
    for required in
        ["LimitNOFILE=", "AmbientCapabilities=\n", "DynamicUser=yes", "KillSignal=SIGTERM", "TimeoutStopSec="]
    {
        assert!(unit.contains(required), "dspeak.service lacks {required:?}");
    }
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    assert_eq!(args, ["--config", "/etc/dspeak/dspeak.toml"]);
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipping systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    assert!(version.status.success());
    // Verify the unit as written, with the binary this build made in its place.
    let dir = std::env::temp_dir().join(format!("dspeak-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dspeak.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/dspeak", env!("CARGO_BIN_EXE_dspeak"))).unwrap();
    let verify = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let stderr = text(&verify.stderr);
    assert!(verify.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
}

/// Overrides that keep `dspeak check` off ports other tests or services may hold.
const FREE_PORTS: &[(&str, &str)] =
    &[("DSPEAK_LISTEN", "127.0.0.1:0"), ("DSPEAK_METRICS_LISTEN", "127.0.0.1:0"), ("DSPEAK_RTC_PORT", "0")];

#[test]
fn dspeak_check_passes_on_the_example_configuration() {
    let example = format!("{DEPLOY}/dspeak.toml");
    let mut env = FREE_PORTS.to_vec();
    env.push(("DSPEAK_AUTH_SECRET", "an-example-secret-of-32-characters"));
    let check = dspeak(&["check", "--config", &example], &env);
    assert!(check.status.success(), "{}{}", text(&check.stdout), text(&check.stderr));
    let out = text(&check.stdout);
    assert!(out.contains("ok: announced addresses 203.0.113.10"), "{out}");
    assert!(out.contains("ok: auth secret set (34 characters)"), "{out}");
    let mut short = FREE_PORTS.to_vec();
    short.push(("DSPEAK_AUTH_SECRET", "only-20-characters--"));
    let check = dspeak(&["check", "--config", &example], &short);
    assert!(check.status.success(), "a short secret is a warning, not an error");
    assert!(text(&check.stdout).contains("use 32 or more random ones"), "{}", text(&check.stdout));

    let config = dspeak(&["config", "--config", &example, "--workers", "2"], &env);
    assert!(config.status.success(), "{}", text(&config.stderr));
    let out = text(&config.stdout);
    for line in [
        "env = \"production\"  # file",
        "announced_address = [\"203.0.113.10\"]  # file",
        "drain_timeout = \"10m\"  # file",
        "listen = \"127.0.0.1:0\"  # environment",
        "workers = 2  # flag",
        "auth_secret = \"***\"  # environment, redacted",
        "event_queue = 1024  # default",
    ] {
        assert!(out.contains(line), "expected {line:?} in:\n{out}");
    }
    assert!(!out.contains("an-example-secret"), "the secret is redacted:\n{out}");
}

#[test]
fn dspeak_check_fails_on_a_bad_configuration_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("dspeak-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    /// A file, extra environment, the exit code and what stderr must say.
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, i32, String);
    let cases: Vec<Case> = vec![
        (file("typo.toml", "listen_addr = \"0.0.0.0:8080\"\n"), vec![], 2, "unknown key `listen_addr`".into()),
        (file("type.toml", "workers = \"four\"\n"), vec![], 2, "invalid value 'four' for '--workers".into()),
        (
            file("prod.toml", "env = \"production\"\nannounced_address = \"203.0.113.10\"\n"),
            vec![],
            1,
            "production needs access tokens".into(),
        ),
        (
            file("media.toml", "env = \"production\"\n"),
            vec![("DSPEAK_AUTH_SECRET", "an-example-secret-of-32-characters")],
            1,
            "--announced-address".into(),
        ),
        (file("busy.toml", &format!("listen = \"{busy}\"\n")), vec![], 1, format!("cannot listen on {busy}")),
    ];
    for (path, env, code, expected) in cases {
        let mut env = env;
        env.extend(FREE_PORTS.iter().filter(|(k, _)| *k != "DSPEAK_LISTEN" || !path.ends_with("busy.toml")));
        let check = dspeak(&["check", "--config", &path], &env);
        let stderr = text(&check.stderr);
        assert_eq!(check.status.code(), Some(code), "{path}: {stderr}");
        assert!(stderr.contains(&expected), "{path}: expected {expected:?} in {stderr}");
    }
}

#[test]
fn environment_variables_override_the_file_and_flags_override_both() {
    let dir = std::env::temp_dir().join(format!("dspeak-precedence-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("p.toml");
    std::fs::write(&path, "workers = 5\nmax_rooms = 7\nevent_queue = 9\n").unwrap();
    let path = path.to_string_lossy().into_owned();
    let env = [("DSPEAK_WORKERS", "3"), ("DSPEAK_MAX_ROOMS", "8")];
    let out = dspeak(&["config", "--config", &path, "--max-rooms", "6"], &env);
    let out = text(&out.stdout);
    assert!(out.contains("workers = 3  # environment"), "{out}");
    assert!(out.contains("max_rooms = 6  # flag"), "{out}");
    assert!(out.contains("event_queue = 9  # file"), "{out}");
    // The file may also come from DSPEAK_CONFIG.
    let out = dspeak(&["config"], &[("DSPEAK_CONFIG", &path)]);
    assert!(text(&out.stdout).contains("workers = 5  # file"), "{}", text(&out.stdout));
}
