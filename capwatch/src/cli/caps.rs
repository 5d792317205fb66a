//! `capwatch caps decode <mask|--pid PID|--container C>` and `capwatch caps <container>`.

use std::path::Path;

use crate::{
    cgroup::Hierarchy,
    cli::StateDir,
    containers::{self, Container},
    error::Error,
    format, query,
};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Show a container's granted capabilities beside those it used.
    pub container: Option<String>,
    #[command(flatten)]
    pub state_dir: StateDir,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Name the capabilities a mask sets and does not, beside Docker's default set; or read a
    /// process's or a running container's live sets.
    #[command(group(clap::ArgGroup::new("source").required(true).args(["mask", "pid", "container"])))]
    Decode {
        /// Hexadecimal, as /proc/<pid>/status prints it (CapEff, CapPrm, CapBnd, …): 0000001dbdbeffff.
        mask: Option<String>,
        /// A process whose sets to read from /proc.
        #[arg(long)]
        pid: Option<u32>,
        /// A running container (name, id or id prefix) whose init process's sets to read.
        #[arg(long)]
        container: Option<String>,
        #[command(flatten)]
        state_dir: StateDir,
    },
}

pub fn run(args: Args) -> Result<(), Error> {
    match (args.command, args.container) {
        (Some(Command::Decode { mask: Some(mask), .. }), _) => print!("{}", format::caps::decoded(parse_mask(&mask)?)),
        (Some(Command::Decode { pid: Some(pid), .. }), _) => print!("{}", live(pid, &format!("pid {pid}"))?),
        (Some(Command::Decode { container: Some(query), state_dir, .. }), _) => {
            let report = query::report(&state_dir.path, &query)?;
            let pid = running_pid(&report.container)?;
            print!(
                "{}",
                live(
                    pid,
                    &format!("container {} ({}), pid {pid}", report.container.name, report.container.short_id())
                )?
            );
        }
        (Some(Command::Decode { .. }), _) => {
            return Err(Error::Usage("name a mask, --pid PID or --container NAME to decode".into()))
        }
        (None, Some(container)) => {
            super::print(&format::caps::side_by_side(&query::report(&args.state_dir.path, &container)?));
            super::print_warnings(&args.state_dir.path);
        }
        (None, None) => return Err(Error::Usage("name a container, or `capwatch caps decode <mask>`".into())),
    }
    Ok(())
}

/// The five sets of /proc/<pid>/status.
fn live(pid: u32, who: &str) -> Result<String, Error> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .map_err(|e| Error::Usage(format!("cannot read {path} ({e}): is process {pid} running?")))?;
    let sets: Vec<(&str, u64)> = ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]
        .into_iter()
        .filter_map(|name| {
            let value = status.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?;
            Some((name, u64::from_str_radix(value.trim(), 16).ok()?))
        })
        .collect();
    Ok(format::caps::live(who, &sets))
}

/// A process of the running container: its init process while it is in the container's cgroup,
/// else any process the cgroup holds.
fn running_pid(container: &Container) -> Result<u32, Error> {
    let not_running = || {
        Error::Usage(format!(
            "container {} is not running, so it has no live capability sets: `capwatch caps {}` shows what it was granted and used",
            container.name, container.name
        ))
    };
    if !container.running() || container.cgroup.is_empty() {
        return Err(not_running());
    }
    if let Some(pid) = container.init_pid.filter(|&p| containers::proc_cgroup(p).as_deref() == Some(&container.cgroup))
    {
        return Ok(pid);
    }
    let procs = Hierarchy::find()?.dir(Path::new(&container.cgroup)).join("cgroup.procs");
    let text = std::fs::read_to_string(&procs).map_err(|_| not_running())?;
    text.lines().find_map(|l| l.trim().parse().ok()).ok_or_else(not_running)
}

fn parse_mask(text: &str) -> Result<u64, Error> {
    let bad = || {
        let shown = crate::names::shown(text);
        Error::Usage(format!(
            "\"{shown}\" is not a capability mask: give up to 16 hex digits, such as 0000001dbdbeffff"
        ))
    };
    let digits = text.trim().trim_start_matches("0x");
    if digits.is_empty() || digits.len() > 16 {
        return Err(bad());
    }
    u64::from_str_radix(digits, 16).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_parse_as_proc_prints_them() {
        assert_eq!(parse_mask("0000001dbdbeffff").unwrap(), 0x1dbdbeffff);
        assert_eq!(parse_mask("0x3").unwrap(), 3);
        for bad in ["", "xyz", "00000000000000000", "-1"] {
            let err = parse_mask(bad).expect_err(bad).to_string();
            assert!(err.contains("not a capability mask"), "{err}");
        }
    }
}
