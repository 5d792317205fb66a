//! `capwatch status`: which capability probe the daemon attached and why the others were
//! refused, from the `status.json` it wrote in its state directory.

use std::{io::ErrorKind, path::PathBuf};

use serde::Deserialize;

use crate::{error::Error, paths, probe};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The daemon's state directory.
    #[arg(long, env = "CAPWATCH_STATE_DIR", default_value = paths::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

/// What `capwatch daemon` writes (see `cli::daemon`); unknown fields are ignored.
#[derive(Debug, Deserialize)]
struct Status {
    pid: u32,
    started: String,
    backend: probe::Backend,
    attempts: Vec<probe::Attempt>,
    cgroup_root: String,
}

pub fn run(args: Args) -> Result<(), Error> {
    let path = args.state_dir.join(paths::STATUS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => Error::NoStatus { path: path.clone() },
        _ => Error::io(&path, e),
    })?;
    let status: Status =
        serde_json::from_str(&text).map_err(|e| Error::BadStatus { path: path.clone(), reason: e.to_string() })?;
    let state = if daemon_running(status.pid) { "running" } else { "not running; this is what it attached last" };
    println!("daemon: pid {} ({state}), started {}, watching {}", status.pid, status.started, status.cgroup_root);
    println!("capability probe: {}", status.backend);
    for attempt in &status.attempts {
        if let Some(reason) = &attempt.refused {
            println!("refused: {}: {reason}", attempt.backend);
        }
    }
    Ok(())
}

/// Whether `pid` is still a capwatch process (and not a pid the kernel has handed out again).
fn daemon_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim_end() == "capwatch")
}
