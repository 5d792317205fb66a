//! `capwatch status`: which capability probe the daemon attached and why the others were
//! refused, from the `status.json` it wrote in its state directory.

use crate::{cli::StateDir, daemon::Status, error::Error};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub state_dir: StateDir,
}

pub fn run(args: Args) -> Result<(), Error> {
    let status = Status::read(&args.state_dir.path)?;
    let state = if status.running() { "running" } else { "not running; this is what it attached last" };
    println!("daemon: pid {} ({state}), started {}, watching {}", status.pid, status.started, status.cgroup_root);
    println!("capability probe: {}", status.backend);
    for attempt in &status.attempts {
        if let Some(reason) = &attempt.refused {
            println!("refused: {}: {reason}", attempt.backend);
        }
    }
    Ok(())
}
