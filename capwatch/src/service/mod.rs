//! What running as a service adds to the daemon: its settings, the JSON lines' output, the
//! Prometheus endpoint, periodic per-container summaries, systemd's readiness protocol and
//! SIGHUP (reopen the log file, reread the config).

pub mod logs;
pub mod metrics;

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use capwatch_common::Verdict;
pub use metrics::Metrics;
use sd_notify::NotifyState;
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    task::JoinHandle,
    time::{interval_at, Instant, Interval, MissedTickBehavior},
};
use tracing::{error, info, warn};

use crate::{
    attribution::Observation,
    config::{Applies, Flags, Settings},
    containers::{catalog::Catalog, Container},
    error::Error,
    journal, names, probe,
    selftest::Sight,
};

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
    /// Per container, what it did so far.
    totals: HashMap<String, ContainerTotals>,
    /// Per container, the (checks, failures) of its previous summary.
    summarized: HashMap<String, (u64, u64)>,
    /// Why the store cannot be written, while it cannot.
    store_failing: Option<String>,
}

/// What a summary line says of a container.
#[derive(Default)]
struct ContainerTotals {
    checks: u64,
    failures: u64,
    granted: BTreeSet<String>,
    denied: BTreeSet<String>,
    failing: BTreeSet<String>,
}

impl Service {
    /// Reads the settings and installs the JSON lines; a bad config stops the daemon here.
    pub fn configure(flags: Flags) -> Result<Self, Error> {
        let settings = Settings::resolve(&flags)?;
        let output = logs::install(&settings.host_name, settings.log_file.as_deref())?;
        let summary = settings.summary_interval.map(summary_interval);
        Ok(Self {
            flags,
            settings,
            output,
            metrics: Metrics::new(),
            server: None,
            hangup: None,
            summary,
            totals: HashMap::new(),
            summarized: HashMap::new(),
            store_failing: None,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The probes are attached and their sight proven: serve metrics and handle SIGHUP. A taken
    /// port stops the start.
    pub async fn listen(&mut self, probe: &probe::Probe, sight: &Sight) -> Result<(), Error> {
        self.metrics.set_backend(probe.backend().name());
        self.metrics.set_sight(sight);
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
        let later: Vec<&str> = self
            .settings
            .given
            .changes(&fresh.given)
            .into_iter()
            .filter(|(_, applies)| *applies == Applies::AtRestart)
            .map(|(name, _)| name)
            .collect();
        if fresh.summary_interval != self.settings.summary_interval {
            self.summary = fresh.summary_interval.map(summary_interval);
        }
        // Only what can change now is taken; the rest stays until the next start.
        match self.settings.reloaded(&fresh) {
            Ok(settings) => self.settings = settings,
            Err(e) => {
                error!(event = "reload_failed", error = %e, "the config was not reloaded; the running settings stay");
            }
        }
        if !later.is_empty() {
            warn!(event = "restart_needed", settings = %later.join(","), "changed settings apply at the next start");
        }
        info!(event = "reloaded", "reopened the log and reread the config");
        notify(&[NotifyState::Ready]);
    }

    /// Counts what the attribution observed, for the metrics and the next summaries.
    pub fn observe(&mut self, observations: &[Observation], catalog: &Catalog) {
        self.metrics.observe(observations);
        self.metrics.containers(catalog);
        for observation in observations {
            match observation {
                Observation::Check(check) => {
                    let Some(container) = &check.place.container else { continue };
                    let totals = self.totals.entry(container.id.clone()).or_default();
                    totals.checks += check.added;
                    let set =
                        if check.key.verdict == Verdict::Granted { &mut totals.granted } else { &mut totals.denied };
                    set.insert(names::capability(check.key.cap).into_owned());
                }
                Observation::Failure(failure) => {
                    let Some(container) = &failure.place.container else { continue };
                    let totals = self.totals.entry(container.id.clone()).or_default();
                    totals.failures += failure.added;
                    totals.failing.insert(format!(
                        "{}:{}",
                        names::syscall(failure.key.syscall),
                        names::errno(failure.key.errno)
                    ));
                }
                Observation::Exec(_) | Observation::Calls(_) | Observation::Lost { .. } => {}
            }
        }
    }

    /// One line per container whose totals changed since its previous summary.
    pub fn summarize(&mut self, catalog: &Catalog) {
        let mut ids: Vec<String> = self.totals.keys().cloned().collect();
        ids.sort();
        for id in ids {
            if let Some(container) = catalog.get(&id) {
                self.summarize_one(container);
            }
        }
    }

    /// After a drain: how much the kernel side holds.
    pub fn drained(&self, monitor: &crate::monitor::Monitor) {
        self.metrics.map_entries(monitor.aggregates());
    }

    /// Containers the daemon forgot (exited, written, and no cgroup of theirs left): their last
    /// summary if anything changed since the previous one, then nothing more is kept of them.
    pub fn forget(&mut self, containers: &[Arc<Container>]) {
        for container in containers {
            if self.summary.is_some() {
                self.summarize_one(container);
            }
            self.totals.remove(&container.id);
            self.summarized.remove(&container.id);
            self.metrics.forget(&container.id);
        }
    }

    fn summarize_one(&mut self, container: &Container) {
        let id = &container.id;
        let Some(totals) = self.totals.get(id) else { return };
        if self.summarized.get(id) == Some(&(totals.checks, totals.failures)) {
            return;
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

    /// What a write to the store came to. A store that cannot be written now (a full disk, a
    /// read-only directory) is said once, counted, and written again at the next drain: the
    /// writer keeps what it holds, and the kernel keeps counting. Anything else stops the daemon.
    pub fn stored(&mut self, written: Result<(), Error>) -> Result<(), Error> {
        match written {
            Ok(()) => {
                if self.store_failing.take().is_some() {
                    info!(
                        event = "store_writable",
                        "the store takes writes again; everything kept meanwhile is written"
                    );
                }
                self.metrics.store_writable(true);
                Ok(())
            }
            Err(Error::StoreUnavailable { path, reason }) => {
                if self.store_failing.is_none() {
                    warn!(event = "store_unwritable", path = %path.display(), reason = %reason, "the store cannot be written now; capwatch keeps counting and writes when it can");
                }
                self.store_failing = Some(reason);
                self.metrics.store_writable(false);
                Ok(())
            }
            Err(e) => Err(e),
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
