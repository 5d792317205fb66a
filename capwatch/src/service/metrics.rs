//! The Prometheus endpoint: what the daemon's aggregates hold, as counters per container, served
//! on `GET /metrics` by a small HTTP/1 server.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
};

use http_body_util::Full;
use hyper::{
    body::Bytes, header::CONTENT_TYPE, server::conn::http1, service::service_fn, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::{
    aggregate::Aggregates,
    attribution::{Observation, Place},
    containers::catalog::Catalog,
    error::Error,
    names,
    selftest::Sight,
};

/// Labels naming a container; empty for cgroups that are no container's (host services).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    container_id: String,
    container_name: String,
    image: String,
    capability: String,
    verdict: String,
    origin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    container_id: String,
    container_name: String,
    image: String,
    syscall: String,
    errno: String,
    origin: String,
    /// capability, file_permissions, seccomp, file_capabilities, kept_capabilities or other (see `capwatch explain`).
    cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabels {
    map: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

/// A kind of check the daemon cannot see on this kernel; the capability is empty for failing
/// syscalls.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BlindSpotLabels {
    capability: String,
    syscall: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// The daemon's metrics, updated at each drain.
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    checks: Family<CheckLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    events: Family<KindLabels, Counter>,
    lost: Family<KindLabels, Counter>,
    containers: Gauge,
    backend: Family<BackendLabels, Gauge>,
    store_writable: Gauge,
    store_failures: Counter,
    map_entries: Family<MapLabels, Gauge>,
    /// Each container's series, so that they go with it.
    series: HashMap<String, (HashSet<CheckLabels>, HashSet<FailureLabels>)>,
    blind_spots: Family<BlindSpotLabels, Gauge>,
    sight_proven: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("capwatch");
        let checks = Family::<CheckLabels, Counter>::default();
        registry.register(
            "capability_checks",
            "Capability checks, by container, capability and verdict",
            checks.clone(),
        );
        let failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "syscall_failures",
            "Syscalls that failed with EPERM or EACCES, by container, syscall, errno and cause",
            failures.clone(),
        );
        let events = Family::<KindLabels, Counter>::default();
        registry.register(
            "events",
            "Everything the kernel side counted, by kind (capability_check, syscall_failure)",
            events.clone(),
        );
        let lost = Family::<KindLabels, Counter>::default();
        registry.register("lost_events", "What the kernel side could not deliver, by kind", lost.clone());
        let containers = Gauge::default();
        registry.register("containers_watched", "Running containers the daemon knows", containers.clone());
        let backend = Family::<BackendLabels, Gauge>::default();
        registry.register("probe_backend", "The capability probe attached (1 for the one in use)", backend.clone());
        let store_writable = Gauge::default();
        registry.register(
            "store_writable",
            "1 while the store takes writes, 0 while it cannot (full disk, read-only)",
            store_writable.clone(),
        );
        let store_failures = Counter::default();
        registry.register(
            "store_write_failures",
            "Writes the store refused; what they held was kept and written later",
            store_failures.clone(),
        );
        let map_entries = Family::<MapLabels, Gauge>::default();
        registry.register(
            "kernel_map_entries",
            "Aggregates the kernel side holds, by map: only those of cgroups that still exist",
            map_entries.clone(),
        );
        let blind_spots = Family::<BlindSpotLabels, Gauge>::default();
        registry.register(
            "blind_spots",
            "Kinds of capability check the daemon cannot see on this kernel (1 each): its advice may lack them",
            blind_spots.clone(),
        );
        let sight_proven = Gauge::default();
        registry.register(
            "sight_proven",
            "Whether the start-up self-test ran (1), so that blind_spots lists all there are",
            sight_proven.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        registry.register("build_info", "capwatch's version (always 1)", build.clone());
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION").into() }).set(1);
        Self {
            registry: Arc::new(Mutex::new(registry)),
            checks,
            failures,
            events,
            lost,
            containers,
            backend,
            store_writable,
            store_failures,
            map_entries,
            series: HashMap::new(),
            blind_spots,
            sight_proven,
        }
    }

    /// How many aggregates the kernel's maps hold.
    pub fn map_entries(&self, aggregates: &Aggregates) {
        for (map, entries) in [
            ("caps", aggregates.caps().len()),
            ("failures", aggregates.failures().len()),
            ("execs", aggregates.execs().len()),
        ] {
            self.map_entries.get_or_create(&MapLabels { map: map.into() }).set(entries as i64);
        }
    }

    /// Removes a forgotten container's series.
    pub fn forget(&mut self, container_id: &str) {
        if let Some((checks, failures)) = self.series.remove(container_id) {
            for labels in &checks {
                self.checks.remove(labels);
            }
            for labels in &failures {
                self.failures.remove(labels);
            }
        }
    }

    pub fn store_writable(&self, writable: bool) {
        self.store_writable.set(i64::from(writable));
        if !writable {
            self.store_failures.inc();
        }
    }

    pub fn set_backend(&self, backend: &str) {
        self.backend.get_or_create(&BackendLabels { backend: backend.into() }).set(1);
    }

    /// What the self-test proved.
    pub fn set_sight(&self, sight: &Sight) {
        self.sight_proven.set(i64::from(sight.unproven.is_none()));
        for spot in &sight.blind_spots {
            let labels = BlindSpotLabels {
                capability: spot.capability.clone().unwrap_or_default(),
                syscall: spot.syscall.clone(),
            };
            self.blind_spots.get_or_create(&labels).set(1);
        }
    }

    /// Adds what each observation added since the previous one of its key.
    pub fn observe(&mut self, observations: &[Observation]) {
        for observation in observations {
            match observation {
                Observation::Check(check) if check.added > 0 => {
                    let (container_id, container_name, image) = labels_of(&check.place);
                    let labels = CheckLabels {
                        container_id,
                        container_name,
                        image,
                        capability: names::capability(check.key.cap).to_string(),
                        verdict: names::verdict(&check.key).into(),
                        origin: check.key.origin.name().into(),
                    };
                    self.checks.get_or_create(&labels).inc_by(check.added);
                    if !labels.container_id.is_empty() {
                        self.series.entry(labels.container_id.clone()).or_default().0.insert(labels);
                    }
                    self.events.get_or_create(&KindLabels { kind: "capability_check".into() }).inc_by(check.added);
                }
                Observation::Failure(failure) if failure.added > 0 => {
                    let (container_id, container_name, image) = labels_of(&failure.place);
                    let labels = FailureLabels {
                        container_id,
                        container_name,
                        image,
                        syscall: names::syscall(failure.key.syscall).to_string(),
                        errno: names::errno(failure.key.errno).to_string(),
                        origin: failure.key.origin.name().into(),
                        cause: failure.detail.cause.kind().into(),
                    };
                    self.failures.get_or_create(&labels).inc_by(failure.added);
                    if !labels.container_id.is_empty() {
                        self.series.entry(labels.container_id.clone()).or_default().1.insert(labels);
                    }
                    self.events.get_or_create(&KindLabels { kind: "syscall_failure".into() }).inc_by(failure.added);
                }
                Observation::Lost { loss, added, .. } => {
                    self.lost.get_or_create(&KindLabels { kind: loss.name().into() }).inc_by(*added);
                }
                _ => {}
            }
        }
    }

    pub fn containers(&self, catalog: &Catalog) {
        self.containers.set(catalog.running().count() as i64);
    }

    /// Binds `addr` now, so a taken port stops the daemon at start; serves until dropped.
    pub async fn serve(&self, addr: SocketAddr) -> Result<tokio::task::JoinHandle<()>, Error> {
        let listener = TcpListener::bind(addr).await.map_err(|source| Error::Listen { addr, source })?;
        let local = listener.local_addr().map_err(|source| Error::Listen { addr, source })?;
        info!(event = "metrics_listening", address = %local, "serving Prometheus metrics on /metrics");
        let registry = self.registry.clone();
        Ok(tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        warn!(event = "metrics_accept_failed", error = %e, "could not accept a metrics connection");
                        continue;
                    }
                };
                let registry = registry.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| respond(request, registry.clone()));
                    // A scraper that hangs up early is its own business.
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        }))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn labels_of(place: &Place) -> (String, String, String) {
    place
        .container
        .as_deref()
        .map_or_else(Default::default, |c| (c.id.clone(), c.name.clone(), c.image.clone().unwrap_or_default()))
}

async fn respond(
    request: Request<hyper::body::Incoming>,
    registry: Arc<Mutex<Registry>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status, content_type, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
            response.headers_mut().insert(CONTENT_TYPE, value);
        }
        Ok(response)
    };
    if request.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "capwatch serves /metrics\n".into());
    }
    let openmetrics = request
        .headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let mut body = String::new();
    let encoded = encode(&mut body, &registry.lock().unwrap_or_else(PoisonError::into_inner));
    match encoded {
        Ok(()) if openmetrics => {
            reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", body)
        }
        Ok(()) => reply(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", text_format(&body)),
        Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "encoding the metrics failed\n".into()),
    }
}

/// OpenMetrics as Prometheus' older text format, for clients that did not ask for OpenMetrics
/// (curl, promtool, older scrapers): there a counter family is named with its `_total`, and
/// there is no `# EOF` or `# UNIT`.
fn text_format(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        text.push_str(renamed.as_deref().unwrap_or(line));
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selftest::{BlindSpot, Kind};

    #[test]
    fn blind_spots_are_one_gauge_each() {
        let metrics = Metrics::new();
        metrics.set_sight(&Sight { blind_spots: vec![BlindSpot::of(Kind::LowMmap)], ..Sight::default() });
        let mut body = String::new();
        encode(&mut body, &metrics.registry.lock().expect("registry")).expect("encodes");
        assert!(body.contains("capwatch_blind_spots{capability=\"CAP_SYS_RAWIO\",syscall=\"mmap\"} 1\n"), "{body}");
        assert!(body.contains("capwatch_sight_proven 1\n"), "{body}");
    }

    #[test]
    fn counters_keep_their_total_in_the_text_format() {
        let openmetrics =
            "# HELP capwatch_events Events.\n# TYPE capwatch_events counter\ncapwatch_events_total{kind=\"x\"} 3\n\
                           # HELP capwatch_up Up.\n# TYPE capwatch_up gauge\ncapwatch_up 1\n# EOF\n";
        assert_eq!(
            text_format(openmetrics),
            "# HELP capwatch_events_total Events.\n# TYPE capwatch_events_total counter\ncapwatch_events_total{kind=\"x\"} 3\n\
             # HELP capwatch_up Up.\n# TYPE capwatch_up gauge\ncapwatch_up 1\n"
        );
    }
}
