//! Docker's Engine API (through bollard): the containers already running, then its event
//! stream, each container inspected once at start while its cgroup and init process exist.

use std::{collections::HashMap, time::Duration};

use bollard::{
    query_parameters::{EventsOptions, ListContainersOptions},
    Docker, API_DEFAULT_VERSION,
};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{identity, proc_caps, proc_cgroup, Container, Granted, Runtime};

/// Docker's socket unless `DOCKER_HOST` or `--docker-socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// What following Docker tells the daemon.
#[derive(Debug)]
pub enum Event {
    /// Docker answers: containers starting from now on will be described.
    Connected,
    /// Docker's event stream ended; the follower tries again.
    Disconnected,
    Started(Box<Container>),
    /// A container Docker created: named before it starts, or fails to.
    Created {
        id: String,
        name: String,
        image: Option<String>,
        at: String,
    },
    /// A container Docker named in its start event but that was gone before it could be inspected,
    /// with its image's layers where Docker still knows the image by the name the event gives.
    Named {
        id: String,
        name: String,
        image: Option<String>,
        layers: Vec<String>,
        at: String,
    },
    Exited {
        id: String,
        at: String,
    },
}

/// Follows Docker until `events` is closed. Reconnects when dockerd restarts; where there is no
/// socket it says so once and keeps trying quietly, so containers are named from cgroup paths
/// meanwhile.
pub async fn follow(socket: String, events: mpsc::Sender<Event>) {
    let mut announced_absence = false;
    loop {
        match connect(&socket).await {
            Ok(docker) => {
                announced_absence = false;
                info!(event = "docker_connected", socket, "following Docker's containers");
                if events.send(Event::Connected).await.is_err() {
                    return;
                }
                if let Err(e) = follow_connected(&docker, &events).await {
                    warn!(event = "docker_disconnected", socket, error = %e, "lost Docker's event stream");
                }
                if events.send(Event::Disconnected).await.is_err() {
                    return;
                }
            }
            Err(e) if !announced_absence => {
                info!(event = "docker_unavailable", socket, error = %e, "no Docker engine; naming containers from cgroup paths");
                announced_absence = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

async fn connect(socket: &str) -> Result<Docker, bollard::errors::Error> {
    Docker::connect_with_unix(socket, 30, API_DEFAULT_VERSION)?.negotiate_version().await
}

async fn follow_connected(docker: &Docker, events: &mpsc::Sender<Event>) -> Result<(), bollard::errors::Error> {
    // Subscribe first so that nothing starting during the listing is missed.
    let filters = HashMap::from([("type".to_string(), vec!["container".to_string()])]);
    let mut stream = docker.events(Some(EventsOptions { filters: Some(filters), ..Default::default() }));

    let running = docker.list_containers(Some(ListContainersOptions { all: false, ..Default::default() })).await?;
    for summary in running {
        if let Some(container) = inspect(docker, summary.id.as_deref().unwrap_or_default()).await {
            if events.send(Event::Started(Box::new(container))).await.is_err() {
                return Ok(());
            }
        }
    }

    while let Some(message) = stream.next().await {
        let message = message?;
        let action = message.action.as_deref().unwrap_or_default();
        let Some(actor) = message.actor else { continue };
        let Some(id) = actor.id else { continue };
        let at = event_time(message.time_nano, message.time);
        let attributes = actor.attributes.unwrap_or_default();
        let name = attributes.get("name").cloned();
        let image = attributes.get("image").cloned();
        let event = match (action, name) {
            ("create", Some(name)) => Event::Created { id, name, image, at },
            ("start", name) => match (inspect(docker, &id).await, name) {
                (Some(container), _) => Event::Started(Box::new(container)),
                // Gone before it could be inspected (a short `docker run --rm`): the event still
                // names it.
                (None, Some(name)) => {
                    let layers = image_layers(docker, image.as_deref()).await;
                    Event::Named { id, name, image, layers, at }
                }
                (None, None) => continue,
            },
            ("die", _) => Event::Exited { id, at },
            _ => continue,
        };
        if events.send(event).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Everything capwatch keeps about a container, read while its init process runs.
async fn inspect(docker: &Docker, id: &str) -> Option<Container> {
    let details = docker.inspect_container(id, None).await.ok()?;
    let id = details.id?;
    let state = details.state.unwrap_or_default();
    let pid = state.pid.filter(|&p| p > 0).map(|p| p as u32);
    let host = details.host_config.unwrap_or_default();
    let config = details.config.unwrap_or_default();
    // A pod's container (the kubelet through Docker) is named as Kubernetes names it.
    let pod_name = config.labels.as_ref().and_then(super::kubernetes::from_labels);
    let (cap_eff, cap_bnd) = pid.map(proc_caps).unwrap_or_default();
    // The init process's cgroup is the truth whatever the cgroup driver or --cgroup-parent.
    let cgroup_path = pid.and_then(proc_cgroup);
    let identity = cgroup_path.as_deref().and_then(identity::parse);
    let cgroup = identity.as_ref().map(|i| i.cgroup.clone()).or(cgroup_path).unwrap_or_default();
    Some(Container {
        name: pod_name
            .or_else(|| details.name.map(|n| n.trim_start_matches('/').to_string()))
            .unwrap_or_else(|| super::short_id(&id).to_string()),
        image: config.image,
        runtime: Runtime::Docker,
        pod_uid: None,
        cgroup,
        init_pid: pid,
        created_at: details.created,
        started_at: state.started_at,
        exited_at: None,
        granted: Some(Granted {
            cap_add: host.cap_add.unwrap_or_default(),
            cap_drop: host.cap_drop.unwrap_or_default(),
            privileged: host.privileged.unwrap_or(false),
            security_opt: host.security_opt.unwrap_or_default(),
            cap_eff,
            cap_bnd,
            user: config.user.filter(|u| !u.is_empty()),
        }),
        layers: match details.graph_driver.and_then(|driver| container_layers(&driver.data)) {
            Some(layers) => layers,
            None => image_layers(docker, details.image.as_deref()).await,
        },
        id,
    })
}

/// overlay2's directories, the topmost first: the container's own upper one, its init layer,
/// then its image's. None where Docker described them in part: a container always has an init
/// layer below its own (daemon/create.go), and overlay2 lists no lower layer once a container
/// being removed has lost their list (daemon/graphdriver/overlay2 getLowerDirs), as a short
/// `docker run --rm` may have by the time it is inspected.
fn container_layers(data: &HashMap<String, String>) -> Option<Vec<String>> {
    data.contains_key("LowerDir").then(|| layers(data)).filter(|layers| !layers.is_empty())
}

/// The layers of an image (an id, or a name where no id is known), which outlive its
/// containers; none where Docker does not know it or its driver keeps no overlay directories.
async fn image_layers(docker: &Docker, image: Option<&str>) -> Vec<String> {
    let Some(image) = image.filter(|i| !i.is_empty()) else { return Vec::new() };
    match docker.inspect_image(image).await {
        Ok(details) => details.graph_driver.map(|driver| layers(&driver.data)).unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// overlay2's `UpperDir`, then its `LowerDir`s.
fn layers(data: &HashMap<String, String>) -> Vec<String> {
    let upper = data.get("UpperDir").into_iter().cloned();
    let lower = data.get("LowerDir").into_iter().flat_map(|dirs| dirs.split(':').map(str::to_string));
    upper.chain(lower).filter(|dir| !dir.is_empty()).collect()
}

fn event_time(nanos: Option<i64>, secs: Option<i64>) -> String {
    let nanos = nanos.or(secs.map(|s| s * 1_000_000_000)).unwrap_or(0).max(0) as u64;
    let time =
        if nanos == 0 { std::time::SystemTime::now() } else { std::time::UNIX_EPOCH + Duration::from_nanos(nanos) };
    crate::clock::rfc3339(time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_containers_layers_are_known_only_where_docker_listed_them_whole() {
        let dir = |d: &str| format!("/var/lib/docker/overlay2/{d}/diff");
        let whole = HashMap::from([
            ("UpperDir".to_string(), dir("c")),
            ("LowerDir".to_string(), format!("{}:{}:{}", dir("c-init"), dir("l2"), dir("l1"))),
        ]);
        assert_eq!(container_layers(&whole), Some(vec![dir("c"), dir("c-init"), dir("l2"), dir("l1")]));
        // Inspected while Docker removed it: its own directory, and no list of those below.
        let removing = HashMap::from([("UpperDir".to_string(), dir("c"))]);
        assert_eq!(container_layers(&removing), None);
        // An image of one layer has no lower ones.
        assert_eq!(layers(&HashMap::from([("UpperDir".to_string(), dir("l1"))])), [dir("l1")]);
    }
}
