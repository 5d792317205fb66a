//! The daemon's settings: `/etc/capwatch/config.toml`, overridden by `CAPWATCH_*` environment
//! variables, overridden by flags. Every setting has the same name in all three places (`state_dir`,
//! `CAPWATCH_STATE_DIR`, `--state-dir`) and a default, so an absent file is a valid config.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::{cli::ProbeChoice, containers::docker, error::Error, paths};

/// The settings as flags and environment variables; unset ones come from the config file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Flags {
    /// The config file. An absent file at the default path means every default.
    #[arg(long, env = "CAPWATCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where capwatch keeps its store and status.
    #[arg(long, env = "CAPWATCH_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Watch only the cgroups below this one (a path in the cgroup2 hierarchy such as /docker,
    /// or its directory). By default every cgroup but the root, where host processes live.
    #[arg(long, env = "CAPWATCH_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,
    /// Which capability probe to use.
    #[arg(long, value_enum, env = "CAPWATCH_PROBE")]
    pub probe: Option<ProbeChoice>,
    /// Docker's API socket; without one, containers are named from their cgroup paths.
    #[arg(long, env = "CAPWATCH_DOCKER_SOCKET")]
    pub docker_socket: Option<String>,
    /// Forget containers that exited more than this many days ago.
    #[arg(long, env = "CAPWATCH_RETENTION_DAYS")]
    pub retention_days: Option<u64>,
    /// Write the JSON lines to this file instead of stdout ("" for stdout). SIGHUP reopens it.
    #[arg(long, env = "CAPWATCH_LOG_FILE")]
    pub log_file: Option<PathBuf>,
    /// Serve Prometheus metrics on this address ("" for no metrics endpoint).
    #[arg(long, env = "CAPWATCH_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Seconds between two per-container summary lines (0 for none).
    #[arg(long, env = "CAPWATCH_SUMMARY_INTERVAL")]
    pub summary_interval: Option<u64>,
    /// The host name every line carries ("" for the system's).
    #[arg(long, env = "CAPWATCH_HOST_NAME")]
    pub host_name: Option<String>,
}

/// The config file's contents, every key defaulted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct File {
    pub state_dir: PathBuf,
    pub cgroup_root: PathBuf,
    pub probe: String,
    pub docker_socket: String,
    pub retention_days: u64,
    pub log_file: PathBuf,
    pub metrics_listen: String,
    pub summary_interval: u64,
    pub host_name: String,
}

impl Default for File {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from(paths::DEFAULT_STATE_DIR),
            cgroup_root: PathBuf::from("/"),
            probe: "auto".into(),
            docker_socket: docker::DEFAULT_SOCKET.into(),
            retention_days: 30,
            log_file: PathBuf::new(),
            metrics_listen: DEFAULT_METRICS_LISTEN.into(),
            summary_interval: 300,
            host_name: String::new(),
        }
    }
}

/// Loopback only by default: the metrics name every container on the host.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9473";

/// What the daemon runs with, resolved and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The file they were read from, if one existed.
    pub source: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub cgroup_root: PathBuf,
    pub probe: ProbeChoice,
    pub docker_socket: String,
    pub retention_days: u64,
    pub log_file: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    pub summary_interval: Option<Duration>,
    pub host_name: String,
}

impl Settings {
    /// Reads the config file named by `--config` (or the default one) and lays the flags over it.
    pub fn resolve(flags: &Flags) -> Result<Self, Error> {
        let (path, explicit) = match &flags.config {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(paths::DEFAULT_CONFIG), false),
        };
        let (file, source) = match std::fs::read_to_string(&path) {
            Ok(text) => (parse(&path, &text)?, Some(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => (File::default(), None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let blame = source.clone().unwrap_or_else(|| PathBuf::from("(flags)"));
        let bad = |key: &str, reason: String| Error::Config {
            path: blame.clone(),
            key: key.to_string(),
            reason,
        };
        let probe = match flags.probe {
            Some(probe) => probe,
            None => ProbeChoice::from_str(&file.probe, true).map_err(|_| {
                let choices: Vec<String> =
                    ProbeChoice::value_variants().iter().filter_map(|v| v.to_possible_value()).map(|v| v.get_name().to_string()).collect();
                bad("probe", format!("{:?} is not one of {}", file.probe, choices.join(", ")))
            })?,
        };
        let metrics = flags.metrics_listen.clone().unwrap_or(file.metrics_listen);
        let metrics_listen = if metrics.is_empty() {
            None
        } else {
            Some(metrics.parse().map_err(|_| bad("metrics_listen", format!("{metrics:?} is not an address and port such as {DEFAULT_METRICS_LISTEN}")))?)
        };
        let log_file = flags.log_file.clone().unwrap_or(file.log_file);
        let summary_interval = flags.summary_interval.unwrap_or(file.summary_interval);
        let host_name = flags.host_name.clone().unwrap_or(file.host_name);
        let settings = Self {
            source,
            state_dir: flags.state_dir.clone().unwrap_or(file.state_dir),
            cgroup_root: flags.cgroup_root.clone().unwrap_or(file.cgroup_root),
            probe,
            docker_socket: flags.docker_socket.clone().unwrap_or(file.docker_socket),
            retention_days: flags.retention_days.unwrap_or(file.retention_days),
            log_file: (!log_file.as_os_str().is_empty()).then_some(log_file),
            metrics_listen,
            summary_interval: (summary_interval > 0).then(|| Duration::from_secs(summary_interval)),
            host_name: if host_name.is_empty() { system_host_name() } else { host_name },
        };
        if settings.state_dir.as_os_str().is_empty() {
            return Err(bad("state_dir", "must name a directory".into()));
        }
        Ok(settings)
    }

    /// The settings as a config file would hold them.
    pub fn to_file(&self) -> File {
        File {
            state_dir: self.state_dir.clone(),
            cgroup_root: self.cgroup_root.clone(),
            probe: self.probe.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default(),
            docker_socket: self.docker_socket.clone(),
            retention_days: self.retention_days,
            log_file: self.log_file.clone().unwrap_or_default(),
            metrics_listen: self.metrics_listen.map(|a| a.to_string()).unwrap_or_default(),
            summary_interval: self.summary_interval.map_or(0, |d| d.as_secs()),
            host_name: self.host_name.clone(),
        }
    }
}

/// Parses a config file; an error names the key at fault, on one line.
pub fn parse(path: &Path, text: &str) -> Result<File, Error> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        key: line_of(text, e.span()),
        reason: e.message().to_string(),
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let key = if key == "." { line_of(text, inner.span()) } else { key };
        Error::Config { path: path.to_path_buf(), key, reason: inner.message().to_string() }
    })
}

/// "line N" for a span, when the parser could not name a key.
fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => format!("line {}", text[..span.start.min(text.len())].matches('\n').count() + 1),
        None => "the file".into(),
    }
}

/// The full default config file, every setting documented.
pub fn default_file() -> String {
    let d = File::default();
    format!(
        r#"# capwatch's daemon settings. Every setting is also a flag (state_dir: --state-dir) and an
# environment variable (CAPWATCH_STATE_DIR); a flag beats the variable, which beats this file.
# SIGHUP rereads this file: log_file, summary_interval and retention_days apply at once, the
# others at the next start.

# Where capwatch keeps its store (capwatch.db) and status.json.
state_dir = {state_dir:?}

# Watch only the cgroups below this one ("/docker" for Docker's containers). "/" watches every
# cgroup but the root, where the host's own processes live.
cgroup_root = {cgroup_root:?}

# The capability probe: "auto" (fexit, then the tracepoint, then the kprobe), "fexit",
# "tracepoint" or "kprobe".
probe = {probe:?}

# Docker's API socket, for container names, images and granted capabilities. Without an engine
# there, containers are named from their cgroup paths.
docker_socket = {docker_socket:?}

# Forget containers that exited more than this many days ago.
retention_days = {retention_days}

# Where the JSON lines go: "" for stdout (journald under systemd), or a file, appended to and
# reopened on SIGHUP (for logrotate).
log_file = {log_file:?}

# The Prometheus endpoint (GET /metrics): an address and port, "" for none. Keep it on loopback
# unless the network in front of it is trusted: the metrics name every container on the host.
metrics_listen = {metrics_listen:?}

# Seconds between per-container summary lines, 0 for none.
summary_interval = {summary_interval}

# The host name every line carries; "" for the system's (set it to the node's name in a pod).
host_name = {host_name:?}
"#,
        state_dir = d.state_dir.display().to_string(),
        cgroup_root = d.cgroup_root.display().to_string(),
        probe = d.probe,
        docker_socket = d.docker_socket,
        retention_days = d.retention_days,
        log_file = d.log_file.display().to_string(),
        metrics_listen = d.metrics_listen,
        summary_interval = d.summary_interval,
        host_name = d.host_name,
    )
}

/// The kernel's host name (uname's nodename).
pub fn system_host_name() -> String {
    // SAFETY: uname fills the struct it is given.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = uts.nodename.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        parse(Path::new("/etc/capwatch/config.toml"), text).expect_err("a bad config").to_string()
    }

    #[test]
    fn the_default_file_is_the_defaults() {
        assert_eq!(parse(Path::new("x"), &default_file()).expect("default file parses"), File::default());
        assert_eq!(parse(Path::new("x"), "").expect("empty file"), File::default());
    }

    #[test]
    fn a_bad_value_names_its_key_on_one_line() {
        let e = error("retention_days = \"soon\"\n");
        assert!(e.starts_with("/etc/capwatch/config.toml: retention_days: "), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = error("state_dir = \"/x\"\nretnetion_days = 3\n");
        assert!(e.starts_with("/etc/capwatch/config.toml: retnetion_days: unknown field"), "{e}");
        let e = error("probe = \n");
        assert!(e.contains("line 1") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn flags_beat_the_file_and_values_are_checked() {
        let dir = std::env::temp_dir().join(format!("capwatch-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("config.toml");
        std::fs::write(&path, "retention_days = 3\nprobe = \"tracepoint\"\nmetrics_listen = \"\"\nlog_file = \"/var/log/c.ndjson\"\n")
            .expect("write");
        let flags = Flags { config: Some(path.clone()), retention_days: Some(9), ..Flags::default() };
        let s = Settings::resolve(&flags).expect("resolves");
        assert_eq!((s.retention_days, s.probe, s.metrics_listen), (9, ProbeChoice::Tracepoint, None));
        assert_eq!(s.log_file.as_deref(), Some(Path::new("/var/log/c.ndjson")));
        assert!(!s.host_name.is_empty());

        std::fs::write(&path, "probe = \"ebpf\"\n").expect("write");
        let e = Settings::resolve(&Flags { config: Some(path.clone()), ..Flags::default() }).expect_err("bad probe").to_string();
        assert!(e.contains(": probe: \"ebpf\" is not one of auto, fexit, tracepoint, kprobe"), "{e}");
        std::fs::write(&path, "metrics_listen = \"localhost\"\n").expect("write");
        let e = Settings::resolve(&Flags { config: Some(path.clone()), ..Flags::default() }).expect_err("bad address").to_string();
        assert!(e.contains(": metrics_listen: "), "{e}");
        let missing = Flags { config: Some(dir.join("absent.toml")), ..Flags::default() };
        assert!(Settings::resolve(&missing).is_err(), "an explicitly named file must exist");
        let _ = std::fs::remove_dir_all(dir);
    }
}
