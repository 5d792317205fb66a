//! `capwatch daemon`: watches the host and logs NDJSON.

use std::path::PathBuf;

use serde::Serialize;
use tracing::info;

use crate::{
    aggregate::Change,
    cgroup::Hierarchy,
    cli::{shutdown_signal, ProbeChoice},
    clock,
    error::Error,
    journal,
    monitor::Monitor,
    paths, probe,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where capwatch keeps its state.
    #[arg(long, env = "CAPWATCH_STATE_DIR", default_value = paths::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Watch only the cgroups below this one (a path in the cgroup2 hierarchy such as /docker,
    /// or its directory). By default every cgroup but the root, where host processes live.
    #[arg(long, env = "CAPWATCH_CGROUP_ROOT", default_value = "/")]
    pub cgroup_root: PathBuf,
    /// Which capability probe to use.
    #[arg(long, value_enum, env = "CAPWATCH_PROBE", default_value_t = ProbeChoice::Auto)]
    pub probe: ProbeChoice,
}

/// `status.json` in the state directory: what the running daemon attached.
#[derive(Serialize)]
struct Status<'a> {
    pid: u32,
    started: String,
    backend: probe::Backend,
    attempts: &'a [probe::Attempt],
    cgroup_root: String,
}

pub async fn run(args: Args) -> Result<(), Error> {
    std::fs::create_dir_all(&args.state_dir).map_err(|e| Error::io(&args.state_dir, e))?;
    let hierarchy = Hierarchy::find()?;
    let scope = hierarchy.scope(&args.cgroup_root, false)?;
    let mut monitor = Monitor::start(probe::Options { scope, backend: args.probe.backend() }, hierarchy)?;

    let probe = monitor.probe();
    for attempt in probe.attempts().iter().filter(|a| a.refused.is_some()) {
        info!(event = "probe_refused", backend = %attempt.backend, reason = attempt.refused.as_deref(), "capability probe refused");
    }
    info!(event = "started", backend = %probe.backend(), cgroup_root = %args.cgroup_root.display(), "capwatch is watching");
    write_status(&args, probe)?;

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            changes = monitor.next() => log_changes(&mut monitor, &changes?),
            _ = &mut shutdown => break,
        }
    }
    let changes = monitor.drain()?;
    log_changes(&mut monitor, &changes);
    log_totals(&mut monitor);
    info!(event = "stopped", "capwatch stopped");
    Ok(())
}

fn log_changes(monitor: &mut Monitor, changes: &[Change]) {
    for change in changes {
        let cgroup = match change {
            Change::NewCap(key, _) => monitor.cgroup_name(key.cgroup_id),
            Change::NewFailure(key, _) => monitor.cgroup_name(key.cgroup_id),
            Change::Lost { .. } => String::new(),
        };
        journal::change(change, &cgroup);
    }
}

/// On the way out, the totals of everything seen, one line per key.
fn log_totals(monitor: &mut Monitor) {
    let caps: Vec<_> = monitor.aggregates().caps().iter().map(|(k, t)| (*k, *t)).collect();
    for (key, totals) in caps {
        let cgroup = monitor.cgroup_name(key.cgroup_id);
        journal::capability_check(&key, &totals, &cgroup, "totals");
    }
    let failures: Vec<_> = monitor.aggregates().failures().iter().map(|(k, t)| (*k, *t)).collect();
    for (key, totals) in failures {
        let cgroup = monitor.cgroup_name(key.cgroup_id);
        journal::syscall_failure(&key, &totals, &cgroup, "totals");
    }
}

fn write_status(args: &Args, probe: &probe::Probe) -> Result<(), Error> {
    let status = Status {
        pid: std::process::id(),
        started: clock::rfc3339(std::time::SystemTime::now()),
        backend: probe.backend(),
        attempts: probe.attempts(),
        cgroup_root: args.cgroup_root.display().to_string(),
    };
    let path = args.state_dir.join(paths::STATUS_FILE);
    let text = serde_json::to_string_pretty(&status).expect("status serializes");
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
}
