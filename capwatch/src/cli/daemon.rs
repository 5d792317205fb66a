//! `capwatch daemon`: watches the host, names containers, logs NDJSON and keeps the store.

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use capwatch_common::{CapKey, FailKey};
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::info;

use crate::{
    aggregate::Change,
    cgroup::Hierarchy,
    cli::shutdown_signal,
    clock,
    config::Settings,
    containers::{catalog::Catalog, docker},
    error::Error,
    journal,
    monitor::{Monitor, Step},
    paths, probe,
    service::{Service, Tick},
    store::{Batch, CgroupRow, RunId, Store},
    symbols::Kallsyms,
};

/// The daemon's flags: its settings (config.rs), each also in the config file.
pub use crate::config::Flags as Args;

/// `status.json` in the state directory: what the running daemon attached.
#[derive(Serialize)]
struct Status<'a> {
    pid: u32,
    started: String,
    backend: probe::Backend,
    attempts: &'a [probe::Attempt],
    cgroup_root: String,
}

/// Frames of a first occurrence's kernel stack kept as its call site.
const CALL_SITE_DEPTH: usize = 4;

/// How often retention runs.
const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

pub async fn run(args: Args) -> Result<(), Error> {
    let mut service = Service::configure(args)?;
    let args = service.settings().clone();
    let mut store = Store::open(&args.state_dir)?;
    let hierarchy = Hierarchy::find()?;
    let scope = hierarchy.scope(&args.cgroup_root, false)?;
    store.forget_exited_before(retention(&args))?;
    let now = clock::rfc3339(SystemTime::now());
    let cgroup_exists = |cgroup: &str| !cgroup.is_empty() && hierarchy.dir(Path::new(cgroup)).exists();
    let mut catalog = Catalog::load(store.containers()?, cgroup_exists, &now);
    let mut monitor = Monitor::start(probe::Options { scope, backend: args.probe.backend() }, hierarchy)?;

    let probe = monitor.probe();
    for attempt in probe.attempts().iter().filter(|a| a.refused.is_some()) {
        info!(event = "probe_refused", backend = %attempt.backend, reason = attempt.refused.as_deref(), "capability probe refused");
    }
    let run = store.begin_run(probe.backend().name())?;
    // Signals and status.json first: once `started` is logged, SIGTERM stops this daemon cleanly
    // and `capwatch status` reports it.
    let shutdown = shutdown_signal();
    service.listen(probe).await?;
    write_status(&args, probe)?;
    info!(event = "started", backend = %probe.backend(), cgroup_root = %args.cgroup_root.display(), "capwatch is watching");
    service.ready(probe);

    let (events_tx, mut events) = mpsc::channel(256);
    let docker = tokio::spawn(docker::follow(args.docker_socket.clone(), events_tx));
    let mut persist = Persister::new(run);
    let mut last_retention = Instant::now();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            step = monitor.next() => {
                let step = step?;
                log_changes(&mut monitor, &mut catalog, step.changes());
                service.observe(&mut monitor, &mut catalog, step.changes(), matches!(step, Step::Drained(_)));
                if let Step::Drained(_) = step {
                    persist.write(&mut store, &mut monitor, &mut catalog)?;
                    if last_retention.elapsed() > RETENTION_INTERVAL {
                        store.forget_exited_before(retention(service.settings()))?;
                        last_retention = Instant::now();
                    }
                }
            }
            Some(event) = events.recv() => {
                let exited = matches!(event, docker::Event::Exited { .. });
                if let Some(container) = catalog.apply(event) {
                    journal::container(container, exited);
                }
            }
            tick = service.next() => match tick {
                Tick::Reload => service.reload(),
                Tick::Summary => service.summarize(&mut monitor, &mut catalog),
            },
            _ = &mut shutdown => break,
        }
    }
    service.stopping();
    docker.abort();
    let changes = monitor.drain()?;
    log_changes(&mut monitor, &mut catalog, &changes);
    service.observe(&mut monitor, &mut catalog, &changes, true);
    persist.write(&mut store, &mut monitor, &mut catalog)?;
    log_totals(&mut monitor, &mut catalog);
    info!(event = "stopped", "capwatch stopped");
    Ok(())
}

fn retention(settings: &Settings) -> Duration {
    Duration::from_secs(settings.retention_days.saturating_mul(86400))
}

fn log_changes(monitor: &mut Monitor, catalog: &mut Catalog, changes: &[Change]) {
    for change in changes {
        let cgroup = match change {
            Change::NewCap(key, _) => monitor.cgroup_name(key.cgroup_id),
            Change::NewFailure(key, _) => monitor.cgroup_name(key.cgroup_id),
            Change::Lost { .. } => String::new(),
        };
        journal::change(change, &cgroup, catalog.for_cgroup(&cgroup));
    }
}

/// On the way out, the totals of everything seen, one line per key.
fn log_totals(monitor: &mut Monitor, catalog: &mut Catalog) {
    let caps: Vec<_> = monitor.aggregates().caps().iter().map(|(k, t)| (*k, *t)).collect();
    for (key, totals) in caps {
        let cgroup = monitor.cgroup_name(key.cgroup_id);
        journal::capability_check(&key, &totals, &cgroup, catalog.for_cgroup(&cgroup), "totals");
    }
    let failures: Vec<_> = monitor.aggregates().failures().iter().map(|(k, t)| (*k, *t)).collect();
    for (key, totals) in failures {
        let cgroup = monitor.cgroup_name(key.cgroup_id);
        journal::syscall_failure(&key, &totals, &cgroup, catalog.for_cgroup(&cgroup), "totals");
    }
}

/// Writes to the store what changed since its previous write.
struct Persister {
    run: RunId,
    kallsyms: Option<Kallsyms>,
    /// Call sites of first occurrences, resolved once.
    sites: HashMap<CapKey, Option<String>>,
    caps: HashMap<CapKey, u64>,
    failures: HashMap<FailKey, u64>,
    cgroups: HashMap<u64, Option<String>>,
}

impl Persister {
    fn new(run: RunId) -> Self {
        Self { run, kallsyms: Kallsyms::load(), sites: HashMap::new(), caps: HashMap::new(), failures: HashMap::new(), cgroups: HashMap::new() }
    }

    fn write(&mut self, store: &mut Store, monitor: &mut Monitor, catalog: &mut Catalog) -> Result<(), Error> {
        let changed: Vec<_> =
            monitor.aggregates().caps().iter().filter(|(k, t)| self.caps.get(*k) != Some(&t.count)).map(|(k, t)| (*k, *t)).collect();
        let mut caps = Vec::with_capacity(changed.len());
        for (key, totals) in changed {
            let site = self.sites.entry(key).or_insert_with(|| {
                let stack = monitor.stack(totals.stack_id)?;
                self.kallsyms.as_ref()?.call_site(&stack, CALL_SITE_DEPTH)
            });
            caps.push((key, totals, site.clone()));
        }
        let failures: Vec<_> = monitor
            .aggregates()
            .failures()
            .iter()
            .filter(|(k, t)| self.failures.get(*k) != Some(&t.count))
            .map(|(k, t)| (*k, *t))
            .collect();
        // A cgroup is written once it is named and, if it is a container's, once its container
        // is known, so a report finds its rows.
        let mut cgroup_paths: Vec<(u64, String, Option<String>)> = Vec::new();
        for id in caps.iter().map(|(k, ..)| k.cgroup_id).chain(failures.iter().map(|(k, _)| k.cgroup_id)) {
            if self.cgroups.contains_key(&id) || cgroup_paths.iter().any(|(known, ..)| *known == id) {
                continue;
            }
            let path = monitor.cgroup_name(id);
            let container = catalog.for_cgroup(&path).map(|c| c.id.clone());
            cgroup_paths.push((id, path, container));
        }
        let cgroups: Vec<CgroupRow<'_>> = cgroup_paths
            .iter()
            .map(|(id, path, container)| CgroupRow { cgroup_id: *id, path, container_id: container.as_deref() })
            .collect();
        let containers = catalog.take_changed();
        if caps.is_empty() && failures.is_empty() && cgroups.is_empty() && containers.is_empty() {
            return Ok(());
        }
        store.write(self.run, &Batch { cgroups: &cgroups, containers: &containers, caps: &caps, failures: &failures })?;
        self.caps.extend(caps.iter().map(|(k, t, _)| (*k, t.count)));
        self.failures.extend(failures.iter().map(|(k, t)| (*k, t.count)));
        self.cgroups.extend(cgroup_paths.into_iter().map(|(id, _, container)| (id, container)));
        Ok(())
    }
}

fn write_status(args: &Settings, probe: &probe::Probe) -> Result<(), Error> {
    let status = Status {
        pid: std::process::id(),
        started: clock::rfc3339(SystemTime::now()),
        backend: probe.backend(),
        attempts: probe.attempts(),
        cgroup_root: args.cgroup_root.display().to_string(),
    };
    let path = args.state_dir.join(paths::STATUS_FILE);
    let text = serde_json::to_string_pretty(&status).expect("status serializes");
    // Written aside and renamed, so a reader never sees half a file.
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, text).map_err(|e| Error::io(&partial, e))?;
    std::fs::rename(&partial, &path).map_err(|e| Error::io(&path, e))
}
