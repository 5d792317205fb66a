//! capwatch's errors. Each one says what is wrong and what to do, on one line.

use std::path::{Path, PathBuf};

use crate::names::shown;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("capwatch needs root to load its eBPF programs (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN): run it as root")]
    NotRoot,

    #[error("this kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing): capwatch needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (Linux 5.15 or newer)")]
    NoBtf,

    #[error("this kernel ({release}) lacks BPF helpers capwatch's programs call ({missing}): capwatch needs Linux {floor} or newer")]
    KernelTooOld { release: String, missing: String, floor: &'static str },

    #[error("no capability probe could attach ({attempts}): capwatch needs BPF trampolines (fexit), the capability:cap_capable tracepoint (Linux 6.14+) or kprobes (CONFIG_KPROBES=y)")]
    NoBackend { attempts: String },

    #[error("the kernel refused capwatch's {program} program: {reason}")]
    Program { program: &'static str, reason: String },

    #[error("this kernel's BTF does not describe {0}: capwatch cannot read it on this kernel")]
    KernelLayout(&'static str),

    #[error("the eBPF object does not hold {0}: this build of capwatch is broken, rebuild it")]
    Missing(&'static str),

    #[error("no cgroup2 hierarchy is mounted: mount one (mount -t cgroup2 none /sys/fs/cgroup/unified)")]
    NoCgroup2,

    #[error("{path}: not a cgroup in the cgroup2 hierarchy at {mount}")]
    NotACgroup { path: PathBuf, mount: PathBuf },

    #[error("{path} is missing: no capwatch daemon has run with this state directory (start one with `capwatch daemon`, or pass --state-dir)")]
    NoStatus { path: PathBuf },

    #[error("{path}: not a status file capwatch understands ({reason})")]
    BadStatus { path: PathBuf, reason: String },

    #[error("no container matches \"{}\": `capwatch ps --all` lists the containers capwatch has seen", shown(.0))]
    UnknownContainer(String),

    #[error("\"{}\" matches more than one container: {candidates}; give more of the id or the name", shown(query))]
    AmbiguousContainer { query: String, candidates: String },

    #[error("{0}: capwatch has no store there yet: start the daemon (capwatch daemon --state-dir {0}) or pass the --state-dir it uses")]
    NoStore(PathBuf),

    #[error("{path}: the store cannot be read ({reason}); it was left untouched: move it aside to start a new one")]
    CorruptStore { path: PathBuf, reason: String },

    #[error(
        "{path}: the store cannot be used now ({reason}); nothing in it was changed: free space or make it writable"
    )]
    StoreUnavailable { path: PathBuf, reason: String },

    #[error("{state_dir}: another capwatch daemon (pid {pid}) keeps its store there: stop it, or give this one another --state-dir")]
    StoreInUse { state_dir: PathBuf, pid: String },

    #[error("{path}: the store has an older layout (schema {version}): start the daemon once to bring it up to date")]
    OlderStore { path: PathBuf, version: i64 },

    #[error("{path}: the store was written by a newer capwatch (schema {version}); upgrade capwatch to read it")]
    NewerStore { path: PathBuf, version: i64 },

    #[error("{0}")]
    Usage(String),

    #[error("{}: no capwatch daemon is running with this state directory: verify needs one to watch its containers (start `capwatch daemon`, or pass the --state-dir it uses)", .state_dir.display())]
    NoDaemon { state_dir: PathBuf },

    #[error("Docker: {doing}: {reason}")]
    Docker { doing: String, reason: String },

    #[error("{container} cannot be recreated: {reason}")]
    Recreate { container: String, reason: String },

    #[error("the daemon of {} never recorded the verification container {name}: is it following the same Docker engine (--docker-socket)?", .state_dir.display())]
    NotRecorded { name: String, state_dir: PathBuf },

    #[error("interrupted: every verification container was removed")]
    Interrupted,

    #[error("not proven: {0}")]
    NotProven(String),

    #[error("{0} observed operation(s) would fail under this set: give it what the table lists")]
    WouldFail(usize),

    #[error("{path}: {key}: {reason}")]
    Config { path: PathBuf, key: String, reason: String },

    #[error("cannot serve metrics on {addr} ({source}): choose another metrics_listen")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },

    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("reading capwatch's kernel maps: {0}")]
    Map(#[from] aya::maps::MapError),
}

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }
}
