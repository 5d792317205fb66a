//! The command line: one file per subcommand; `main.rs` only dispatches.

pub mod caps;
pub mod config;
pub mod daemon;
pub mod explain;
pub mod ps;
pub mod report;
pub mod status;
pub mod trace;

use clap::{Parser, Subcommand};

use crate::probe::Backend;

/// capwatch: which capabilities containers really use, and why their syscalls fail with EPERM.
#[derive(Debug, Parser)]
#[command(name = "capwatch", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch every cgroup on the host and log each new observation as a JSON line.
    Daemon(daemon::Args),
    /// Watch one cgroup in the foreground; Ctrl-C prints the totals.
    Trace(trace::Args),
    /// What a container used, each capability's verdict, and the least privilege it needs.
    Report(report::Args),
    /// Why a container's syscalls failed with EPERM/EACCES: capability, file permissions, seccomp…
    Explain(explain::Args),
    /// Decode a capability mask, or show a container's granted and used capabilities.
    Caps(caps::Args),
    /// List the containers capwatch has seen (running ones; --all for exited ones too).
    Ps(ps::Args),
    /// Show which capability probe the daemon attached, and why others were refused.
    Status(status::Args),
    /// The daemon's config file: print the default one, or check one and show the settings.
    Config(config::Args),
}

/// `--probe`: which capability backend to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeChoice {
    /// The first that works: fexit, then the tracepoint, then the kprobe.
    #[default]
    Auto,
    Fexit,
    Tracepoint,
    Kprobe,
}

impl ProbeChoice {
    pub fn backend(self) -> Option<Backend> {
        match self {
            ProbeChoice::Auto => None,
            ProbeChoice::Fexit => Some(Backend::Fexit),
            ProbeChoice::Tracepoint => Some(Backend::Tracepoint),
            ProbeChoice::Kprobe => Some(Backend::Kprobe),
        }
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed by this call, not when the future
/// is first polled: a signal sent as soon as the command says it has started must not kill it.
pub fn shutdown_signal() -> impl std::future::Future<Output = std::io::Result<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = signal(SignalKind::terminate()).and_then(|term| Ok((term, signal(SignalKind::interrupt())?)));
    async move {
        let (mut term, mut int) = handlers?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    }
}
