//! The daemon: watches the host, names containers, logs NDJSON lines, serves metrics and keeps the
//! store. Each step of the monitor goes through the attribution stage once; its observations are
//! then only read, by the lines, the service (metrics and summaries) and the store's writer.

use std::{
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::{
    attribution::Attribution,
    cgroup::Hierarchy,
    clock,
    config::Settings,
    containers::{self, catalog::Catalog, docker},
    error::Error,
    journal,
    monitor::{Monitor, Step},
    paths, probe,
    selftest::{self, Sight},
    service::{Service, Tick},
    signals,
    store::{Store, Writer},
};

/// How often retention runs.
const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// `status.json` in the state directory: what the running daemon attached.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub started: String,
    pub backend: probe::Backend,
    pub attempts: Vec<probe::Attempt>,
    /// Why the programs read the current task through the helpers: the kernel refused the
    /// casts. Absent where it took them, or had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub casts_refused: Option<String>,
    pub cgroup_root: String,
    /// What the self-test proved at start: absent from a daemon older than it.
    #[serde(default)]
    pub sight: Option<Sight>,
}

impl Status {
    /// What the daemon of `state_dir` wrote, if one ever ran there.
    pub fn read(state_dir: &Path) -> Result<Self, Error> {
        let path = state_dir.join(paths::STATUS_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NoStatus { path: path.clone() },
            _ => Error::io(&path, e),
        })?;
        serde_json::from_str(&text).map_err(|e| Error::BadStatus { path, reason: e.to_string() })
    }

    /// Whether the daemon that wrote it still runs (and not a process that took its pid).
    pub fn running(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/comm", self.pid)).is_ok_and(|comm| comm.trim_end() == "capwatch")
    }

    fn write(&self, state_dir: &Path) -> Result<(), Error> {
        let path = state_dir.join(paths::STATUS_FILE);
        let text = serde_json::to_string_pretty(self).expect("status serializes");
        // Written aside and renamed, so a reader never sees half a file.
        let partial = path.with_extension("json.partial");
        std::fs::write(&partial, text).map_err(|e| Error::io(&partial, e))?;
        std::fs::rename(&partial, &path).map_err(|e| Error::io(&path, e))
    }
}

/// Runs until SIGTERM or SIGINT; a bad config or an unsupported kernel stops it at start.
pub async fn run(mut service: Service) -> Result<(), Error> {
    let settings = service.settings().clone();
    let mut store = Store::open(&settings.state_dir)?;
    let hierarchy = Hierarchy::find()?;
    let scope = hierarchy.scope(&settings.cgroup_root, false)?;
    store.forget_exited_before(retention(&settings))?;
    let now = clock::rfc3339(SystemTime::now());
    let cgroup_exists = |cgroup: &str| !cgroup.is_empty() && hierarchy.dir(Path::new(cgroup)).exists();
    let catalog = Catalog::load(store.containers()?, cgroup_exists, &now);
    let mut attribution = Attribution::new(hierarchy.clone(), catalog, store.kernel_checks()?);
    let mut monitor = Monitor::start(
        probe::Options {
            scope,
            backend: settings.probe.backend(),
            maps: settings.maps,
            syscall_sets: settings.syscall_sets,
            reads: probe::Reads::Casts,
        },
        hierarchy.clone(),
    )?;
    for attempt in monitor.probe().attempts().iter().filter(|a| a.refused.is_some()) {
        info!(event = "probe_refused", backend = %attempt.backend, reason = attempt.refused.as_deref(), "capability probe refused");
    }
    if let Some(reason) = monitor.probe().casts_refused() {
        info!(
            event = "casts_refused",
            reason, "the kernel refused reading the current task by casts: the helpers read it"
        );
    }
    // Before anything is reported: what this probe cannot see is said with everything it says.
    let sight = selftest::run(&mut monitor, &hierarchy, &settings.cgroup_root, &selftest::this_program());
    log_sight(&sight);

    let probe = monitor.probe();
    let host_bounding = containers::proc_caps(std::process::id()).1;
    let mut writer = Writer::new(store.begin_run(probe.backend().name(), host_bounding)?);
    // Signals and status.json first: once `started` is logged, SIGTERM stops this daemon cleanly
    // and `capwatch status` reports it.
    let shutdown = signals::shutdown();
    service.listen(probe, &sight).await?;
    let status = Status {
        pid: std::process::id(),
        started: clock::rfc3339(SystemTime::now()),
        backend: probe.backend(),
        attempts: probe.attempts().to_vec(),
        casts_refused: probe.casts_refused().map(str::to_string),
        cgroup_root: settings.cgroup_root.display().to_string(),
        sight: Some(sight),
    };
    status.write(&settings.state_dir)?;
    info!(event = "started", backend = %probe.backend(), cgroup_root = %settings.cgroup_root.display(), "capwatch is watching");
    service.ready(probe);

    let (events_tx, mut events) = mpsc::channel(256);
    let docker = tokio::spawn(docker::follow(settings.docker_socket.clone(), events_tx));
    let mut last_retention = Instant::now();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            step = monitor.next() => {
                let step = step?;
                let observations = attribution.attribute(&monitor, step.changes());
                journal::new(&observations);
                service.observe(&observations, attribution.catalog());
                writer.note(&observations);
                if let Step::Drained(_) = step {
                    let (changed, forgotten) = attribution.take_changed_containers();
                    writer.note_containers(changed);
                    service.stored(writer.write(&mut store))?;
                    writer.forget(monitor.gone());
                    service.forget(&forgotten);
                    service.drained(&monitor);
                    if last_retention.elapsed() > RETENTION_INTERVAL {
                        service.stored(store.forget_exited_before(retention(service.settings())).map(drop))?;
                        last_retention = Instant::now();
                    }
                }
            }
            Some(event) = events.recv() => {
                if let Some(container) = attribution.apply(event) {
                    journal::container(&container);
                }
            }
            tick = service.next() => match tick {
                Tick::Reload => service.reload(),
                Tick::Summary => service.summarize(attribution.catalog()),
            },
            _ = &mut shutdown => break,
        }
    }
    service.stopping();
    docker.abort();
    let changes = monitor.drain()?;
    let mut observations = attribution.attribute(&monitor, &changes);
    observations.extend(attribution.flush(&monitor));
    journal::new(&observations);
    service.observe(&observations, attribution.catalog());
    writer.note(&observations);
    writer.note_containers(attribution.take_changed_containers().0);
    if let Err(e) = service.stored(writer.write(&mut store)) {
        error!(event = "store_lost", error = %e, "stopping with observations the store could not take");
    }
    journal::totals(&attribution.totals(&monitor));
    info!(event = "stopped", "capwatch stopped");
    Ok(())
}

/// The self-test's one line: a warning when capwatch cannot see everything it relies on.
fn log_sight(sight: &Sight) {
    let warnings = sight.warnings();
    let hooked = sight.hooked().join(", ");
    let blind_spots = sight.blind_spots.iter().map(|b| b.message.as_str()).collect::<Vec<_>>().join("; ");
    if warnings.is_empty() {
        info!(event = "selftest", millis = sight.millis, hooked, "capwatch sees every kind of check it relies on");
    } else {
        let unproven = sight.unproven.as_deref();
        warn!(event = "selftest", millis = sight.millis, hooked, blind_spots, unproven, "{}", warnings.join("; "));
    }
}

fn retention(settings: &Settings) -> Duration {
    Duration::from_secs(settings.retention_days.saturating_mul(86400))
}
