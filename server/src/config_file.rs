//! The configuration file (`--config dspeak.toml`) and the effective configuration.
//!
//! The file's keys are the flags' names in snake_case (`rtc_port = 40000`), derived
//! from the clap definitions themselves: a flag added to [`crate::config::Config`] is
//! a file key with no other change. Precedence: flags, then environment variables,
//! then the file, then defaults. The file's values go through the same clap parsers as
//! flags, so they are validated the same way.
//!
//! [`parse`] reads the command line, then the file it names, and parses again with the
//! file's values appended as flags for every argument the command line and the
//! environment left unset. [`Loaded::effective`] prints the result as TOML.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command, Parser};

/// The argument that names the file.
const CONFIG_ARG: &str = "config";

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Flags or environment variables are invalid (clap's own message and exit code).
    #[error(transparent)]
    Args(#[from] clap::Error),
    /// The configuration file is unreadable or invalid.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
}

/// A parsed command line with what it needs to print the effective configuration.
#[derive(Debug)]
pub struct Loaded<P> {
    /// The parsed flags.
    pub parsed: P,
    /// The (sub)command that holds the configuration flags, and its matches.
    command: Command,
    matches: ArgMatches,
    /// Keys whose value came from the file.
    from_file: BTreeSet<String>,
}

/// Parses `args` (the program name first) like `P::try_parse_from`, filling in from
/// the `--config` file what flags and the environment leave unset.
pub fn parse<P: Parser>(args: impl IntoIterator<Item = impl Into<OsString>>) -> Result<Loaded<P>, ConfigError> {
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let first = P::command().try_get_matches_from(&args)?;
    let Some((command, matches)) = config_command(P::command(), &first) else {
        return Ok(Loaded {
            parsed: P::from_arg_matches(&first)?,
            command: P::command(),
            matches: first,
            from_file: BTreeSet::new(),
        });
    };
    let Some(path) = matches.get_one::<PathBuf>(CONFIG_ARG).cloned() else {
        return Ok(Loaded { parsed: P::from_arg_matches(&first)?, command, matches, from_file: BTreeSet::new() });
    };
    let (extra, from_file) = file_args(&path, &command, &matches)?;
    let all: Vec<OsString> = args.into_iter().chain(extra).collect();
    let second = P::command()
        .try_get_matches_from(&all)
        .map_err(|e| ConfigError::File { path: path.clone(), message: e.render().to_string().trim().to_owned() })?;
    let parsed = P::from_arg_matches(&second)?;
    // The second parse has the first one's shape (the file only adds flags to the same
    // command), so the `--config` command is found again; the top level is a fallback.
    let (command, matches) = config_command(P::command(), &second).unwrap_or_else(|| (P::command(), second.clone()));
    Ok(Loaded { parsed, command, matches, from_file })
}

/// The command (top level or subcommand) that has the `--config` argument.
fn config_command(command: Command, matches: &ArgMatches) -> Option<(Command, ArgMatches)> {
    if let Some((name, sub)) = matches.subcommand() {
        let sub_command = command.find_subcommand(name)?.clone();
        return config_command(sub_command, sub);
    }
    let has_config = command.get_arguments().any(|a| a.get_id() == CONFIG_ARG);
    has_config.then(|| (command, matches.clone()))
}

/// The flags that carry the file's values for arguments nothing else set.
fn file_args(
    path: &Path,
    command: &Command,
    matches: &ArgMatches,
) -> Result<(Vec<OsString>, BTreeSet<String>), ConfigError> {
    let error = |message: String| ConfigError::File { path: path.to_owned(), message };
    let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| error(e.to_string().trim().to_owned()))?;
    let mut extra = Vec::new();
    let mut from_file = BTreeSet::new();
    for (key, value) in &table {
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() != CONFIG_ARG && a.get_long().map(file_key).as_deref() == Some(key.as_str()))
            .ok_or_else(|| {
                error(format!(
                    "unknown key `{key}`; keys are the flags of `dspeak --help` in snake_case, e.g. `rtc_port`"
                ))
            })?;
        let explicit = matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if explicit {
            continue;
        }
        let long = arg.get_long().unwrap_or_default();
        let values = match value {
            toml::Value::Array(items) => items.iter().collect(),
            single => vec![single],
        };
        for v in values {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) if !arg.get_action().takes_values() => {
                    if *b {
                        extra.push(OsString::from(format!("--{long}")));
                    }
                    continue;
                }
                toml::Value::Boolean(b) => b.to_string(),
                _ => return Err(error(format!("`{key}` must be a string, a number, a boolean or an array of them"))),
            };
            extra.push(OsString::from(format!("--{long}={text}")));
        }
        from_file.insert(key.clone());
    }
    Ok((extra, from_file))
}

/// A flag's file key: `--rtc-port` is `rtc_port`.
pub fn file_key(long: &str) -> String {
    long.replace('-', "_")
}

impl<P> Loaded<P> {
    /// The effective configuration as TOML that `--config` reads back: every key, its
    /// source in a comment, secrets redacted, unset options commented out.
    pub fn effective(&self) -> String {
        let mut out = String::from("# dspeak effective configuration (flags > environment > file > defaults)\n");
        for arg in self.command.get_arguments() {
            let (id, Some(long)) = (arg.get_id().as_str(), arg.get_long()) else { continue };
            if id == CONFIG_ARG || matches!(arg.get_action(), ArgAction::Help | ArgAction::Version) {
                continue;
            }
            let key = file_key(long);
            let source = if self.from_file.contains(&key) {
                "file"
            } else {
                match self.matches.value_source(id) {
                    Some(ValueSource::CommandLine) => "flag",
                    Some(ValueSource::EnvVariable) => "environment",
                    _ => "default",
                }
            };
            let raw: Vec<String> = self
                .matches
                .get_raw(id)
                .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let secret = arg.is_hide_env_values_set();
            let value = match raw.as_slice() {
                [] => {
                    out.push_str(&format!("# {key} = (unset)\n"));
                    continue;
                }
                _ if secret => toml::Value::String("***".into()),
                [one] if !matches!(arg.get_action(), ArgAction::Append) => toml_value(arg, one),
                many => toml::Value::Array(many.iter().map(|v| toml_value(arg, v)).collect()),
            };
            let note = if secret { format!("{source}, redacted") } else { source.to_owned() };
            out.push_str(&format!("{key} = {value}  # {note}\n"));
        }
        out
    }
}

/// A raw flag value as TOML: booleans for switches, integers where they are integers,
/// strings otherwise.
fn toml_value(arg: &clap::Arg, raw: &str) -> toml::Value {
    if !arg.get_action().takes_values()
        && let Ok(b) = raw.parse::<bool>()
    {
        return toml::Value::Boolean(b);
    }
    match raw.parse::<i64>() {
        Ok(i) if i.to_string() == raw => toml::Value::Integer(i),
        _ => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dspeak-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load(args: &[&str]) -> Result<Loaded<Cli>, ConfigError> {
        parse::<Cli>(std::iter::once("dspeak").chain(args.iter().copied()))
    }

    /// Every flag of `Config` is a key of the effective configuration, and that output
    /// read back as a file gives the same configuration: every flag has a file key.
    #[test]
    fn every_flag_has_a_file_key_and_the_effective_configuration_reads_back() {
        let loaded = load(&["--workers", "3", "--metrics-listen", "127.0.0.1:9099", "--drain-timeout", "2m"]).unwrap();
        let printed = loaded.effective();
        for arg in <Cli as clap::CommandFactory>::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if arg.get_id() == CONFIG_ARG || long == "help" {
                continue;
            }
            let key = file_key(long);
            assert!(
                printed.lines().any(|l| l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key} = "))),
                "--{long} has no key `{key}` in:\n{printed}"
            );
        }
        let path = write("roundtrip.toml", &printed);
        let again = load(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(again.parsed.config.workers, 3);
        assert_eq!(again.parsed.config.drain_timeout, std::time::Duration::from_secs(120));
        let strip = |s: &str| s.lines().map(|l| l.split("  #").next().unwrap().to_owned()).collect::<Vec<_>>();
        assert_eq!(strip(&again.effective()), strip(&printed));
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let path = write("precedence.toml", "workers = 5\nrtc_port = 41000\nmax_rooms = 7\nlog_format = \"json\"\n");
        let loaded = load(&["--config", path.to_str().unwrap(), "--workers", "2"]).unwrap();
        let c = &loaded.parsed.config;
        assert_eq!((c.workers, c.rtc_port, c.limits.max_rooms), (2, 41000, 7));
        assert_eq!(c.log_format, crate::config::LogFormat::Json);
        let printed = loaded.effective();
        assert!(printed.contains("workers = 2  # flag"), "{printed}");
        assert!(printed.contains("rtc_port = 41000  # file"), "{printed}");
        assert!(printed.contains("max_peers_per_room = 1000  # default"), "{printed}");
    }

    #[test]
    fn secrets_are_redacted() {
        let path = write("secret.toml", "auth_secret = \"0123456789abcdef-very-secret\"\n");
        let loaded = load(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(loaded.parsed.config.auth_secret.as_ref().unwrap().expose(), "0123456789abcdef-very-secret");
        let printed = loaded.effective();
        assert!(!printed.contains("very-secret"), "{printed}");
        assert!(printed.contains("auth_secret = \"***\"  # file, redacted"), "{printed}");
    }

    #[test]
    fn bad_files_name_the_problem() {
        let cases = [
            ("unknown.toml", "rtc_prot = 1\n", "unknown key `rtc_prot`"),
            ("value.toml", "rtc_port = \"many\"\n", "--rtc-port"),
            ("range.toml", "rtc_port = 70000\n", "70000"),
            ("syntax.toml", "workers = \n", "line 1"),
            ("table.toml", "max_rooms = { n = 1 }\n", "must be a string"),
            ("short.toml", "auth_secret = \"short\"\n", "at least 16 characters"),
        ];
        for (name, text, expected) in cases {
            let path = write(name, text);
            let error = load(&["--config", path.to_str().unwrap()]).unwrap_err().to_string();
            assert!(error.contains(expected), "{name}: {error}");
            assert!(error.contains(name), "{name}: the message names the file: {error}");
        }
        let missing = load(&["--config", "/nonexistent/dspeak.toml"]).unwrap_err().to_string();
        assert!(missing.contains("cannot read"), "{missing}");
    }
}
