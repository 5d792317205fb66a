//! The daemon's settings: `/etc/capwatch/config.toml`, overridden by `CAPWATCH_*` environment
//! variables, overridden by flags. Each setting is defined once, in `settings!` below: its name
//! (`state_dir`, `--state-dir`, `CAPWATCH_STATE_DIR`), its type in the file, its default, its
//! documentation, and whether a change waits for the next start. The flags, the file, the
//! documented default file and the reload's "needs a restart" all follow from that one entry.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    containers::docker,
    error::Error,
    paths,
    probe::{self, MapSizes},
};

/// Loopback only by default: the metrics name every container on the host.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9473";

/// Whether a changed setting applies on SIGHUP or at the next start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    AtReload,
    AtRestart,
}

macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        $name:ident: $type:ty = $default:expr, env $env:literal, $applies:ident;
    )+) => {
        /// The settings as flags and environment variables; unset ones come from the config file.
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct Flags {
            /// The config file. An absent file at the default path means every default.
            #[arg(long, env = "CAPWATCH_CONFIG")]
            pub config: Option<PathBuf>,
            $(
                $(#[doc = $doc])+
                #[arg(long, env = $env)]
                pub $name: Option<$type>,
            )+
        }

        /// The config file's contents, every key defaulted.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct File {
            $(pub $name: $type,)+
        }

        impl Default for File {
            fn default() -> Self {
                Self { $($name: $default,)+ }
            }
        }

        impl File {
            /// The file with the flags laid over it.
            fn overlaid(self, flags: &Flags) -> Self {
                Self { $($name: flags.$name.clone().unwrap_or(self.$name),)+ }
            }

            /// `self` with the settings that apply at a reload taken from `fresh`.
            pub fn reloaded(&self, fresh: &File) -> File {
                Self {
                    $($name: match Applies::$applies {
                        Applies::AtReload => fresh.$name.clone(),
                        Applies::AtRestart => self.$name.clone(),
                    },)+
                }
            }

            /// The settings that differ between `self` and `other`, and when each change applies.
            pub fn changes(&self, other: &File) -> Vec<(&'static str, Applies)> {
                let mut changed = Vec::new();
                $(if self.$name != other.$name {
                    changed.push((stringify!($name), Applies::$applies));
                })+
                changed
            }
        }

        /// The full default config file, every setting documented.
        pub fn default_file() -> String {
            let defaults = File::default();
            let mut text = String::from(HEADER);
            $(
                text.push('\n');
                for line in [$($doc),+] {
                    text.push_str(&format!("#{line}\n"));
                }
                let value = toml::Value::try_from(&defaults.$name).expect("defaults serialize");
                text.push_str(&format!("{} = {}\n", stringify!($name), value));
            )+
            text
        }
    };
}

settings! {
    /// Where capwatch keeps its store (capwatch.db) and status.json.
    state_dir: PathBuf = PathBuf::from(paths::DEFAULT_STATE_DIR), env "CAPWATCH_STATE_DIR", AtRestart;
    /// Watch only the cgroups below this one (a path in the cgroup2 hierarchy such as "/docker" for
    /// Docker's containers, or its directory). "/" watches every cgroup but the root, where the
    /// host's own processes live.
    cgroup_root: PathBuf = PathBuf::from("/"), env "CAPWATCH_CGROUP_ROOT", AtRestart;
    /// The capability probe: "auto" (fexit, then the tracepoint, then the kprobe), "fexit",
    /// "tracepoint" or "kprobe".
    probe: probe::Choice = probe::Choice::default(), env "CAPWATCH_PROBE", AtRestart;
    /// Docker's API socket, for container names, images and granted capabilities. Without an
    /// engine there, containers are named from their cgroup paths.
    docker_socket: String = docker::DEFAULT_SOCKET.into(), env "CAPWATCH_DOCKER_SOCKET", AtRestart;
    /// Forget containers that exited more than this many days ago.
    retention_days: u64 = 30, env "CAPWATCH_RETENTION_DAYS", AtReload;
    /// Where the JSON lines go: "" for stdout (journald under systemd), or a file, appended to and
    /// reopened on SIGHUP (for logrotate).
    log_file: PathBuf = PathBuf::new(), env "CAPWATCH_LOG_FILE", AtReload;
    /// The Prometheus endpoint (GET /metrics): an address and port, "" for none. Keep it on
    /// loopback unless the network in front of it is trusted: the metrics name every container on
    /// the host.
    metrics_listen: String = DEFAULT_METRICS_LISTEN.into(), env "CAPWATCH_METRICS_LISTEN", AtRestart;
    /// Seconds between per-container summary lines, 0 for none.
    summary_interval: u64 = 300, env "CAPWATCH_SUMMARY_INTERVAL", AtReload;
    /// Record the syscalls each container makes, for the seccomp profile `capwatch report --format
    /// seccomp` writes. It costs every syscall in a watched cgroup a per-CPU cache lookup
    /// (docs/performance.md).
    syscall_sets: bool = true, env "CAPWATCH_SYSCALL_SETS", AtRestart;
    /// The host name every line carries; "" for the system's (set it to the node's name in a pod).
    host_name: String = String::new(), env "CAPWATCH_HOST_NAME", AtRestart;
    /// Entries of the kernel's map of capability-check aggregates: distinct (cgroup, capability,
    /// syscall, verdict, origin) keys of live cgroups. What does not fit is counted as lost.
    caps_map_entries: u32 = MapSizes::default().caps, env "CAPWATCH_CAPS_MAP_ENTRIES", AtRestart;
    /// Entries of the kernel's map of failing-syscall aggregates.
    failures_map_entries: u32 = MapSizes::default().failures, env "CAPWATCH_FAILURES_MAP_ENTRIES", AtRestart;
    /// Entries of the kernel's map of programs exec'd per cgroup.
    execs_map_entries: u32 = MapSizes::default().execs, env "CAPWATCH_EXECS_MAP_ENTRIES", AtRestart;
    /// Entries of the kernel's map of first occurrences' stacks (their call sites' names only).
    stack_map_entries: u32 = MapSizes::default().stacks, env "CAPWATCH_STACK_MAP_ENTRIES", AtRestart;
    /// Threads that can be between a denied check and their syscall's exit at once.
    denied_map_entries: u32 = MapSizes::default().denied, env "CAPWATCH_DENIED_MAP_ENTRIES", AtRestart;
    /// kprobe backend: threads that can be inside cap_capable at once.
    kprobe_stash_entries: u32 = MapSizes::default().kprobe_stash, env "CAPWATCH_KPROBE_STASH_ENTRIES", AtRestart;
    /// Bytes of the ring buffer of first occurrences: a power of two, at least 4096.
    ringbuf_bytes: u32 = MapSizes::default().ringbuf_bytes, env "CAPWATCH_RINGBUF_BYTES", AtRestart;
}

const HEADER: &str = "\
# capwatch's daemon settings. Every setting is also a flag (state_dir: --state-dir) and an
# environment variable (CAPWATCH_STATE_DIR); a flag beats the variable, which beats this file.
# SIGHUP rereads this file: log_file, summary_interval and retention_days apply at once, the
# others at the next start.
";

/// What the daemon runs with: the file with the flags laid over it, checked and typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The file they were read from, if one existed.
    pub source: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub cgroup_root: PathBuf,
    pub probe: probe::Choice,
    pub docker_socket: String,
    pub retention_days: u64,
    pub log_file: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    pub summary_interval: Option<Duration>,
    pub host_name: String,
    pub maps: MapSizes,
    pub syscall_sets: bool,
    /// The settings as given, to compare with a reread.
    pub given: File,
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
        Self::checked(file.overlaid(flags), source)
    }

    /// What a running daemon takes from a reread: the settings that apply at a reload.
    pub fn reloaded(&self, fresh: &Settings) -> Result<Self, Error> {
        Self::checked(self.given.reloaded(&fresh.given), fresh.source.clone())
    }

    fn checked(given: File, source: Option<PathBuf>) -> Result<Self, Error> {
        let blame = source.clone().unwrap_or_else(|| PathBuf::from("(flags)"));
        let bad = |key: &str, reason: String| Error::Config { path: blame.clone(), key: key.to_string(), reason };
        if given.state_dir.as_os_str().is_empty() {
            return Err(bad("state_dir", "must name a directory".into()));
        }
        for (key, entries) in [
            ("caps_map_entries", given.caps_map_entries),
            ("failures_map_entries", given.failures_map_entries),
            ("execs_map_entries", given.execs_map_entries),
            ("stack_map_entries", given.stack_map_entries),
            ("denied_map_entries", given.denied_map_entries),
            ("kprobe_stash_entries", given.kprobe_stash_entries),
        ] {
            if entries == 0 {
                return Err(bad(key, "must be at least 1".into()));
            }
        }
        if !given.ringbuf_bytes.is_power_of_two() || given.ringbuf_bytes < 4096 {
            return Err(bad(
                "ringbuf_bytes",
                format!("{} is not a power of two of at least 4096", given.ringbuf_bytes),
            ));
        }
        let maps = MapSizes {
            caps: given.caps_map_entries,
            failures: given.failures_map_entries,
            execs: given.execs_map_entries,
            stacks: given.stack_map_entries,
            denied: given.denied_map_entries,
            kprobe_stash: given.kprobe_stash_entries,
            ringbuf_bytes: given.ringbuf_bytes,
        };
        let metrics_listen = match given.metrics_listen.as_str() {
            "" => None,
            address => Some(address.parse().map_err(|_| {
                bad(
                    "metrics_listen",
                    format!("{address:?} is not an address and port such as {DEFAULT_METRICS_LISTEN}"),
                )
            })?),
        };
        Ok(Self {
            source,
            state_dir: given.state_dir.clone(),
            cgroup_root: given.cgroup_root.clone(),
            probe: given.probe,
            docker_socket: given.docker_socket.clone(),
            retention_days: given.retention_days,
            log_file: (!given.log_file.as_os_str().is_empty()).then(|| given.log_file.clone()),
            metrics_listen,
            summary_interval: (given.summary_interval > 0).then(|| Duration::from_secs(given.summary_interval)),
            host_name: if given.host_name.is_empty() { system_host_name() } else { given.host_name.clone() },
            maps,
            syscall_sets: given.syscall_sets,
            given,
        })
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
        assert!(default_file()
            .contains("\n# Forget containers that exited more than this many days ago.\nretention_days = 30\n"));
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
    fn changes_say_when_they_apply() {
        let old = File::default();
        let new = File { retention_days: 3, metrics_listen: String::new(), ..File::default() };
        assert_eq!(old.changes(&new), [("retention_days", Applies::AtReload), ("metrics_listen", Applies::AtRestart)]);
    }

    #[test]
    fn flags_beat_the_file_and_values_are_checked() {
        let dir = std::env::temp_dir().join(format!("capwatch-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("config.toml");
        std::fs::write(
            &path,
            "retention_days = 3\nprobe = \"tracepoint\"\nmetrics_listen = \"\"\nlog_file = \"/var/log/c.ndjson\"\n",
        )
        .expect("write");
        let flags = Flags { config: Some(path.clone()), retention_days: Some(9), ..Flags::default() };
        let s = Settings::resolve(&flags).expect("resolves");
        assert_eq!(
            (s.retention_days, s.probe, s.metrics_listen),
            (9, probe::Choice(Some(probe::Backend::Tracepoint)), None)
        );
        assert_eq!(s.log_file.as_deref(), Some(Path::new("/var/log/c.ndjson")));
        assert!(!s.host_name.is_empty());

        std::fs::write(&path, "probe = \"ebpf\"\n").expect("write");
        let e = Settings::resolve(&Flags { config: Some(path.clone()), ..Flags::default() })
            .expect_err("bad probe")
            .to_string();
        assert!(e.contains(": probe: \"ebpf\" is not one of auto, fexit, tracepoint, kprobe"), "{e}");
        std::fs::write(&path, "metrics_listen = \"localhost\"\n").expect("write");
        let e = Settings::resolve(&Flags { config: Some(path.clone()), ..Flags::default() })
            .expect_err("bad address")
            .to_string();
        assert!(e.contains(": metrics_listen: "), "{e}");
        let missing = Flags { config: Some(dir.join("absent.toml")), ..Flags::default() };
        assert!(Settings::resolve(&missing).is_err(), "an explicitly named file must exist");
        let _ = std::fs::remove_dir_all(dir);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// Whatever a config file holds, parsing it ends in settings or in one line naming what
        /// is wrong: never a panic.
        #[test]
        fn any_config_text_is_settings_or_one_line(text in "(?s).{0,400}") {
            if let Err(e) = parse(Path::new("/etc/capwatch/config.toml"), &text) {
                let line = e.to_string();
                proptest::prop_assert!(!line.contains('\n'), "{}", line);
            }
        }

        /// The same for files that look like configs: known keys with values of any shape.
        #[test]
        fn any_value_of_a_known_key_is_checked(
            key in "(state_dir|cgroup_root|probe|docker_socket|retention_days|log_file|metrics_listen|summary_interval|host_name|caps_map_entries|ringbuf_bytes)",
            value in "(\"[^\"\n]{0,40}\"|-?[0-9]{1,25}|true|\\[\\]|\\{\\}|[a-z]{1,10})",
        ) {
            let text = format!("{key} = {value}\n");
            if let Err(e) = parse(Path::new("c.toml"), &text) {
                proptest::prop_assert!(!e.to_string().contains('\n'));
            }
        }
    }
}
