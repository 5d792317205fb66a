//! What running as a service adds to the daemon: its settings, the JSON lines' output, the
//! Prometheus endpoint, periodic per-container summaries, systemd's readiness protocol and
//! SIGHUP (reopen the log file, reread the config).

pub mod logs;
pub mod metrics;

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use sd_notify::NotifyState;
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    task::JoinHandle,
    time::{interval_at, Instant, Interval, MissedTickBehavior},
};
use tracing::{error, info, warn};

use crate::{
    aggregate::Change,
    config::{Flags, Settings},
    containers::catalog::Catalog,
    error::Error,
    journal,
    monitor::Monitor,
    names, probe,
};

pub use metrics::Metrics;

/// What `Service::next` brought.
pub enum Tick {
    /// SIGHUP.
    Reload,
    /// Time for the per-container summaries.
    Summary,
}

pub struct Service {
    flags: Flags,
    settings: Settings,
    output: logs::Output,
    metrics: Metrics,
    server: Option<JoinHandle<()>>,
    hangup: Option<Signal>,
    summary: Option<Interval>,
    /// Per container, the (checks, failures) of its previous summary.
    summarized: HashMap<String, (u64, u64)>,
}

impl Service {
    /// Reads the settings and installs the JSON lines; a bad config stops the daemon here.
    pub fn configure(flags: Flags) -> Result<Self, Error> {
        let settings = Settings::resolve(&flags)?;
        let output = logs::install(&settings.host_name, settings.log_file.as_deref())?;
        let summary = settings.summary_interval.map(summary_interval);
        Ok(Self { flags, settings, output, metrics: Metrics::new(), server: None, hangup: None, summary, summarized: HashMap::new() })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The probes are attached: serve metrics and handle SIGHUP. A taken port stops the start.
    pub async fn listen(&mut self, probe: &probe::Probe) -> Result<(), Error> {
        self.metrics.set_backend(probe.backend().name());
        if let Some(addr) = self.settings.metrics_listen {
            self.server = Some(self.metrics.serve(addr).await?);
        }
        self.hangup = Some(signal(SignalKind::hangup()).map_err(|e| Error::io("SIGHUP", e))?);
        Ok(())
    }

    /// Tells systemd the daemon is up (Type=notify).
    pub fn ready(&self, probe: &probe::Probe) {
        notify(&[NotifyState::Ready, NotifyState::Status(&format!("watching with the {} probe", probe.backend()))]);
    }

    /// SIGHUP or the next summary, whichever comes first.
    pub async fn next(&mut self) -> Tick {
        let hangup = async {
            match self.hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        let summary = async {
            match self.summary.as_mut() {
                Some(interval) => interval.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = hangup => Tick::Reload,
            _ = summary => Tick::Summary,
        }
    }

    /// Reopens the log file and rereads the config. Settings that cannot change while the
    /// probes are attached are reported and wait for the next start; a bad config is reported
    /// and the running settings kept.
    pub fn reload(&mut self) {
        notify(&[NotifyState::Reloading]);
        let fresh = match Settings::resolve(&self.flags) {
            Ok(fresh) => fresh,
            Err(e) => {
                error!(event = "reload_failed", error = %e, "the config was not reloaded; the running settings stay");
                if let Err(e) = self.output.reopen(self.settings.log_file.as_deref()) {
                    error!(event = "log_reopen_failed", error = %e, "could not reopen the log file; writing to the old one");
                }
                notify(&[NotifyState::Ready]);
                return;
            }
        };
        if let Err(e) = self.output.reopen(fresh.log_file.as_deref()) {
            error!(event = "log_reopen_failed", error = %e, "could not reopen the log file; writing to the old one");
        }
        let old = self.settings.to_file();
        let new = fresh.to_file();
        let mut later = Vec::new();
        for (key, changed) in [
            ("state_dir", old.state_dir != new.state_dir),
            ("cgroup_root", old.cgroup_root != new.cgroup_root),
            ("probe", old.probe != new.probe),
            ("docker_socket", old.docker_socket != new.docker_socket),
            ("metrics_listen", old.metrics_listen != new.metrics_listen),
            ("host_name", old.host_name != new.host_name),
        ] {
            if changed {
                later.push(key);
            }
        }
        if fresh.summary_interval != self.settings.summary_interval {
            self.summary = fresh.summary_interval.map(summary_interval);
        }
        // Only what can change now is taken; the rest stays until the next start.
        self.settings.log_file = fresh.log_file;
        self.settings.summary_interval = fresh.summary_interval;
        self.settings.retention_days = fresh.retention_days;
        self.settings.source = fresh.source;
        if !later.is_empty() {
            warn!(event = "restart_needed", settings = %later.join(","), "changed settings apply at the next start");
        }
        info!(event = "reloaded", "reopened the log and reread the config");
        notify(&[NotifyState::Ready]);
    }

    /// Counts what a step brought and brings the counters up to the aggregates after a drain.
    pub fn observe(&mut self, monitor: &mut Monitor, catalog: &mut Catalog, changes: &[Change], drained: bool) {
        self.metrics.changes(changes);
        if !drained {
            return;
        }
        let caps: Vec<_> = monitor.aggregates().caps().iter().map(|(k, t)| (*k, t.count)).collect();
        for (key, count) in caps {
            let cgroup = monitor.cgroup_name(key.cgroup_id);
            self.metrics.cap(&key, count, catalog.for_cgroup(&cgroup));
        }
        let failures: Vec<_> = monitor.aggregates().failures().iter().map(|(k, t)| (*k, t.count)).collect();
        for (key, count) in failures {
            let cgroup = monitor.cgroup_name(key.cgroup_id);
            self.metrics.failure(&key, count, catalog.for_cgroup(&cgroup));
        }
        self.metrics.containers(catalog);
    }

    /// One line per container whose totals changed since its previous summary.
    pub fn summarize(&mut self, monitor: &mut Monitor, catalog: &mut Catalog) {
        #[derive(Default)]
        struct Totals {
            checks: u64,
            failures: u64,
            granted: BTreeSet<String>,
            denied: BTreeSet<String>,
            failing: BTreeSet<String>,
        }
        let mut by_container: HashMap<String, Totals> = HashMap::new();
        let caps: Vec<_> = monitor.aggregates().caps().iter().map(|(k, t)| (*k, t.count)).collect();
        for (key, count) in caps {
            let cgroup = monitor.cgroup_name(key.cgroup_id);
            let Some(container) = catalog.for_cgroup(&cgroup) else { continue };
            let totals = by_container.entry(container.id.clone()).or_default();
            totals.checks += count;
            let set = if journal::verdict(key.verdict) == "granted" { &mut totals.granted } else { &mut totals.denied };
            set.insert(names::capability(key.cap).into_owned());
        }
        let failures: Vec<_> = monitor.aggregates().failures().iter().map(|(k, t)| (*k, t.count)).collect();
        for (key, count) in failures {
            let cgroup = monitor.cgroup_name(key.cgroup_id);
            let Some(container) = catalog.for_cgroup(&cgroup) else { continue };
            let totals = by_container.entry(container.id.clone()).or_default();
            totals.failures += count;
            totals.failing.insert(format!("{}:{}", names::syscall(key.syscall), names::errno(key.errno)));
        }
        let mut ids: Vec<_> = by_container.keys().cloned().collect();
        ids.sort();
        for id in ids {
            let (Some(totals), Some(container)) = (by_container.get(&id), catalog.get(&id)) else { continue };
            if self.summarized.get(&id) == Some(&(totals.checks, totals.failures)) {
                continue;
            }
            self.summarized.insert(id.clone(), (totals.checks, totals.failures));
            info!(
                target: journal::TARGET,
                event = "summary",
                container_id = container.id.as_str(),
                container_name = container.name.as_str(),
                image = container.image.as_deref().unwrap_or(""),
                running = container.running(),
                checks = totals.checks,
                failures = totals.failures,
                granted = %join(&totals.granted),
                denied = %join(&totals.denied),
                failing_syscalls = %join(&totals.failing),
                "container summary"
            );
        }
    }

    /// The daemon is on its way out.
    pub fn stopping(&mut self) {
        notify(&[NotifyState::Stopping]);
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter().map(String::as_str).collect::<Vec<_>>().join(",")
}

fn summary_interval(period: Duration) -> Interval {
    // The first summary comes one period after the start, not at once.
    let mut interval = interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

/// Tells systemd (when it started us with NOTIFY_SOCKET); a failure is logged, never fatal.
fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        warn!(event = "notify_failed", error = %e, "could not notify the service manager");
    }
}
