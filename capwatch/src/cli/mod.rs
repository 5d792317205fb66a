//! The command line: one file per subcommand, each parsing its arguments, calling the library and
//! printing; `main.rs` only dispatches. Options shared by several subcommands are declared here
//! once and flattened in.

pub mod caps;
pub mod config;
pub mod daemon;
pub mod explain;
pub mod ps;
pub mod report;
pub mod run;
pub mod status;
pub mod trace;
pub mod verify;
pub mod whatif;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::{paths, query, selftest::Sight};

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
    /// Run a command under capwatch, with no daemon, and print what it needs when it ends.
    Run(run::Args),
    /// Which observed operations would fail under another capability set (exit status 1 if any).
    Whatif(whatif::Args),
    /// Prove the advice: rerun the container with it, then without each capability (exit status 0 only when proven).
    Verify(verify::Args),
    /// Decode a capability mask, or show a container's granted and used capabilities.
    Caps(caps::Args),
    /// List the containers capwatch has seen (running ones; --all for exited ones too).
    Ps(ps::Args),
    /// Show which capability probe the daemon attached, and why others were refused.
    Status(status::Args),
    /// The daemon's config file: print the default one, or check one and show the settings.
    Config(config::Args),
    /// The child the daemon's self-test runs in a throwaway cgroup (not for people).
    #[command(name = "selftest-child", hide = true)]
    SelftestChild,
}

/// Where the daemon keeps what it saw: every command that reads it takes this.
#[derive(Debug, Clone, clap::Args)]
pub struct StateDir {
    /// The daemon's state directory.
    #[arg(long = "state-dir", env = "CAPWATCH_STATE_DIR", default_value = paths::DEFAULT_STATE_DIR)]
    pub path: PathBuf,
}

/// Prints what the daemon cannot see, a line each, after a table built from what it saw.
fn print_warnings(state_dir: &Path) {
    for warning in query::sight(state_dir).iter().flat_map(Sight::warnings) {
        println!("{warning}");
    }
}

/// Prints `text`, ending it with a newline if it has none.
fn print(text: &str) {
    if text.ends_with('\n') {
        print!("{text}");
    } else {
        println!("{text}");
    }
}
