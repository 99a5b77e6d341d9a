//! Tidy checks over every Rust file of the workspace, run by `cargo test`.
//!
//! They check rules, not a list of files: a file added anywhere is held to them.
//! - Every `.rs` file starts with a `//!` module doc.
//! - No `.unwrap()` or `.expect(` outside tests, except the calls in [`ALLOWED_PANICS`],
//!   each with the reason it cannot fail. Tests are files under a `tests/` directory, a
//!   file marked `#![cfg(test)]`, and a `#[cfg(test)] mod` block.
//! - Layering ([`LAYERS`]): the room state machine uses nothing from sessions (or a
//!   runtime); the media engine crate (`media/`) uses nothing of the server, and its
//!   manifest names no dspeak crate but `dspeak-schema`.
#![cfg(test)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Calls allowed to panic outside tests: (file, the call's text, why it cannot fail).
const ALLOWED_PANICS: &[(&str, &str, &str)] = &[
    (
        "schema/src/export.rs",
        r#".expect("a standard code")"#,
        "error_refs is only given codes from STANDARD_ERROR_CODES",
    ),
    ("schema/src/export.rs", r#".expect("params are named")"#, "Contract::collect names every params schema"),
    (
        "schema/src/export.rs",
        r#".expect("params are an object with properties")"#,
        "every params type is a struct; the export's unit tests build it",
    ),
    ("schema/src/export.rs", r#".expect("results are named")"#, "Contract::collect names every result schema"),
    (
        "server/src/api.rs",
        r#".expect("method names in the schema table are unique")"#,
        "at start, from the table, whose names a schema test keeps unique",
    ),
    ("server/src/api.rs", r#".expect("serializes")"#, "a serde_json::Value always serializes"),
    ("server/src/api.rs", r#".expect("rpc.discover is registered once")"#, "registered once at start"),
    ("server/src/api.rs", r#".expect("ping is registered once")"#, "registered once at start"),
    ("server/src/api.rs", r#".expect("resume is registered once")"#, "registered once at start"),
    ("server/src/events.rs", r#".expect("events always serialize")"#, "events are plain data"),
    (
        "media/src/ice.rs",
        r#".expect("the OS CSPRNG does not fail")"#,
        "getrandom on Linux blocks until seeded and then does not fail",
    ),
    ("server/src/web.rs", r#".expect("static headers are valid")"#, "the headers are constants"),
    ("xtask/src/main.rs", r#".expect("xtask is inside the workspace")"#, "CARGO_MANIFEST_DIR is xtask/"),
    ("xtask/src/ts.rs", r#".expect("strings serialize")"#, "a string always serializes"),
];

/// Layering: files under a path prefix must not use these paths, and why.
const LAYERS: &[(&str, &[&str], &str)] = &[
    (
        "server/src/room.rs",
        &["crate::session", "crate::api", "tokio"],
        "rooms are a sans-IO state machine; sessions carry out their effects",
    ),
    (
        "media/src/",
        &["dspeak_server", "jsonrpsee"],
        "the media engine (crate dspeak-media) knows no server: no JSON-RPC, sessions or rooms",
    ),
];

/// Directories never searched for sources.
const SKIP_DIRS: &[&str] = &["target", "node_modules", ".git", ".venv", "artifacts", "fixtures"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file of the workspace, as (path relative to the root with `/`, text).
fn rust_files() -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !SKIP_DIRS.contains(&name.as_str()) {
                    walk(&path, root, out);
                }
            } else if name.ends_with(".rs") {
                let relative = path.strip_prefix(root).unwrap_or(&path);
                let relative = relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>();
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                out.push((relative.join("/"), text));
            }
        }
    }
    let root = workspace_root();
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out.sort();
    assert!(out.iter().any(|(p, _)| p == "server/src/room.rs"), "the walk found the workspace");
    out
}

/// Whether the whole file is test code.
fn is_test_file(path: &str, text: &str) -> bool {
    path.split('/').any(|c| c == "tests") || text.lines().any(|l| l.trim() == "#![cfg(test)]")
}

/// The lines of `text` outside `#[cfg(test)] mod … { … }` blocks, with their numbers,
/// comments dropped.
fn non_test_lines(text: &str) -> Vec<(usize, &str)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or_default();
        if line.trim() == "#[cfg(test)]" && next.starts_with("mod ") && next.ends_with(';') {
            // A test module in its own file (marked `#![cfg(test)]` there).
            i += 2;
            continue;
        }
        if line.trim() == "#[cfg(test)]" && next.starts_with("mod ") {
            // Skip to the end of the module's braces.
            let mut depth = 0i32;
            let mut opened = false;
            i += 1;
            while i < lines.len() {
                for c in lines[i].chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                i += 1;
                if opened && depth <= 0 {
                    break;
                }
            }
            continue;
        }
        let code = line.split("//").next().unwrap_or_default();
        if !code.trim().is_empty() {
            out.push((i + 1, code));
        }
        i += 1;
    }
    out
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let missing: Vec<String> =
        rust_files().into_iter().filter(|(_, text)| !text.starts_with("//!")).map(|(path, _)| path).collect();
    assert!(missing.is_empty(), "these files must start with a `//!` doc saying what lives there: {missing:#?}");
}

#[test]
fn no_unwrap_or_expect_outside_tests_but_the_allowed_ones() {
    let mut found = Vec::new();
    let mut used = BTreeSet::new();
    for (path, text) in rust_files() {
        if is_test_file(&path, &text) {
            continue;
        }
        for (n, line) in non_test_lines(&text) {
            if !line.contains(".unwrap()") && !line.contains(".expect(") {
                continue;
            }
            match ALLOWED_PANICS.iter().position(|(p, call, _)| *p == path && line.contains(call)) {
                Some(i) => {
                    used.insert(i);
                }
                None => found.push(format!("{path}:{n}: {}", line.trim())),
            }
        }
    }
    assert!(
        found.is_empty(),
        "return an error instead, or add the call to ALLOWED_PANICS with why it cannot fail:\n{}",
        found.join("\n")
    );
    let stale: Vec<_> = ALLOWED_PANICS.iter().enumerate().filter(|(i, _)| !used.contains(i)).map(|(_, a)| a).collect();
    assert!(stale.is_empty(), "ALLOWED_PANICS lists calls that are gone: {stale:#?}");
}

/// Every path a file's code names: `use` trees expanded (`use a::{b, c::d}` gives
/// `a::b` and `a::c::d`) and paths written inline (`crate::x::y(…)`).
fn used_paths(text: &str) -> BTreeSet<String> {
    let code: Vec<&str> = non_test_lines(text).into_iter().map(|(_, l)| l).collect();
    let code = code.join("\n");
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(start) = find_use(rest) {
        let tail = &rest[start..];
        let end = tail.find(';').unwrap_or(tail.len());
        let tree = tail[..end].split_whitespace().collect::<Vec<_>>().join(" ");
        let tree = tree.replace(", ", ",").replace("{ ", "{").replace(" }", "}");
        expand_use("", &tree, &mut out);
        rest = &tail[end..];
    }
    for word in code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
        if word.contains("::") {
            out.insert(word.trim_matches(':').to_owned());
        }
    }
    out
}

/// The offset just after the next `use ` keyword that starts a statement.
fn find_use(code: &str) -> Option<usize> {
    let mut offset = 0;
    while let Some(i) = code[offset..].find("use ") {
        let at = offset + i;
        let before = code[..at].chars().next_back();
        if before.is_none_or(|c| c == '\n' || c == ' ' || c == '{' || c == ';') {
            return Some(at + 4);
        }
        offset = at + 4;
    }
    None
}

fn expand_use(prefix: &str, tree: &str, out: &mut BTreeSet<String>) {
    match tree.find('{') {
        None => {
            let path = tree.split(" as ").next().unwrap_or(tree);
            out.insert(format!("{prefix}{path}"));
        }
        Some(open) => {
            let head = &tree[..open];
            let inner = tree[open + 1..].strip_suffix('}').unwrap_or(&tree[open + 1..]);
            let mut depth = 0;
            let mut item = String::new();
            for c in inner.chars().chain([',']) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        if !item.is_empty() {
                            expand_use(&format!("{prefix}{head}"), &item, out);
                        }
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
        }
    }
}

#[test]
fn layers_use_only_what_is_below_them() {
    let mut broken = Vec::new();
    for (path, text) in rust_files() {
        for (prefix, forbidden, why) in LAYERS {
            if !path.starts_with(prefix) {
                continue;
            }
            for used in used_paths(&text) {
                if forbidden.iter().any(|f| used == *f || used.starts_with(&format!("{f}::"))) {
                    broken.push(format!("{path} uses {used}: {why}"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "layering:\n{}", broken.join("\n"));
}

#[test]
fn the_media_engine_crate_does_not_depend_on_the_server() {
    let manifest = std::fs::read_to_string(workspace_root().join("media/Cargo.toml")).unwrap();
    let deps: Vec<&str> = manifest.lines().filter(|l| l.trim_start().starts_with("dspeak-")).collect();
    assert_eq!(deps, ["dspeak-schema.workspace = true"], "dspeak-media may depend only on dspeak-schema");
}

#[test]
fn used_paths_sees_grouped_and_inline_paths() {
    let text = "//! x\nuse crate::{events::{self, Pushed}, session::Session as S};\nuse tokio::sync;\n\
                fn f() { crate::api::go(); }\n#[cfg(test)]\nmod tests {\n    use crate::room;\n}\n";
    let used = used_paths(text);
    for path in
        ["crate::events::self", "crate::events::Pushed", "crate::session::Session", "tokio::sync", "crate::api::go"]
    {
        assert!(used.contains(path), "{path} in {used:?}");
    }
    assert!(!used.iter().any(|p| p.contains("room")), "test modules are skipped: {used:?}");
}
