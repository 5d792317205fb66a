//! The daemon's view of containers: what the runtime told it, what cgroup paths say where no
//! runtime answered, and which cgroup belongs to which container.

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{docker::Event, identity, kubernetes, systemd, Container, Runtime};

#[derive(Debug, Default)]
pub struct Catalog {
    by_id: HashMap<String, Arc<Container>>,
    /// Containers changed since the last `take_changed`.
    changed: BTreeSet<String>,
    /// Containers nothing more will be seen of: forgotten once they exited and were taken.
    retiring: BTreeSet<String>,
}

impl Catalog {
    /// Starts from what the store remembers. Containers it thought running whose cgroup is gone
    /// exited while no daemon watched: they are marked exited now.
    pub fn load(stored: Vec<Container>, cgroup_exists: impl Fn(&str) -> bool, now: &str) -> Self {
        let mut catalog = Self::default();
        for mut container in stored {
            if container.running() && !cgroup_exists(&container.cgroup) {
                container.exited_at = Some(now.to_string());
                catalog.changed.insert(container.id.clone());
            }
            catalog.by_id.insert(container.id.clone(), Arc::new(container));
        }
        catalog
    }

    /// Applies a runtime event; returns the container it concerns.
    pub fn apply(&mut self, event: Event) -> Option<Arc<Container>> {
        let container = match event {
            Event::Started(container) => Arc::from(container),
            Event::Exited { id, at } => {
                let known = self.by_id.get(&id)?;
                Arc::new(Container { exited_at: Some(at), ..Container::clone(known) })
            }
            Event::Created { id, name, image, at } => {
                let base = self.named(&id, name, image);
                Arc::new(Container { created_at: Some(at), ..base })
            }
            Event::Named { id, name, image, layers, at } => {
                let base = self.named(&id, name, image);
                let layers = if base.layers.is_empty() { layers } else { base.layers.clone() };
                Arc::new(Container { started_at: base.started_at.clone().or(Some(at)), layers, ..base })
            }
            Event::Connected | Event::Disconnected => return None,
        };
        self.changed.insert(container.id.clone());
        self.by_id.insert(container.id.clone(), Arc::clone(&container));
        Some(container)
    }

    /// The container `id` as its runtime named it, known or new.
    fn named(&self, id: &str, name: String, image: Option<String>) -> Container {
        let base = self.by_id.get(id).map_or_else(
            || {
                Container::from_identity(&super::Identity {
                    runtime: Runtime::Docker,
                    id: id.to_string(),
                    pod_uid: None,
                    cgroup: String::new(),
                })
            },
            |known| Container::clone(known),
        );
        Container { name, image: image.or(base.image.clone()), ..base }
    }

    /// Learns the container a cgroup belongs to, from its path where no runtime described one
    /// holding it, and returns its id; None where the cgroup is no container's. `dir` gives a
    /// cgroup's directory, where a systemd unit's processes are read.
    pub fn learn(&mut self, path: &str, dir: impl Fn(&str) -> PathBuf) -> Option<String> {
        if let Some(known) = self.for_cgroup(path) {
            // A unit started again after it stopped: the same unit, running anew.
            if known.runtime == Runtime::Systemd && !known.running() {
                let id = known.id.clone();
                let mut again = Container::clone(known);
                again.exited_at = None;
                again.started_at = Some(crate::clock::rfc3339(std::time::SystemTime::now()));
                let unit_dir = dir(&again.cgroup);
                systemd::describe(&mut again, &unit_dir);
                self.by_id.insert(id.clone(), Arc::new(again));
                self.changed.insert(id.clone());
                return Some(id);
            }
            return Some(known.id.clone());
        }
        let identity = identity::parse(path)?;
        if let Some(known) = self.by_id.get(&identity.id).filter(|c| c.cgroup.is_empty()) {
            // Named by its runtime before its cgroup was seen.
            let located = Arc::new(Container { cgroup: identity.cgroup.clone(), ..Container::clone(known) });
            self.by_id.insert(identity.id.clone(), located);
            self.changed.insert(identity.id.clone());
        }
        if !self.by_id.contains_key(&identity.id) {
            let mut container = Container::from_identity(&identity);
            if let Some(name) = kubernetes::name(Path::new("/"), &identity) {
                container.name = name;
            }
            if identity.runtime == Runtime::Systemd {
                container.name = systemd::name(&identity);
                container.started_at = Some(crate::clock::rfc3339(std::time::SystemTime::now()));
                systemd::describe(&mut container, &dir(&identity.cgroup));
            }
            self.by_id.insert(identity.id.clone(), Arc::new(container));
            self.changed.insert(identity.id.clone());
        }
        Some(identity.id)
    }

    /// The container a runtime described whose cgroup holds this one.
    pub fn for_cgroup(&self, path: &str) -> Option<&Arc<Container>> {
        self.by_id
            .values()
            .filter(|c| !c.cgroup.is_empty() && (path == c.cgroup || path.starts_with(&format!("{}/", c.cgroup))))
            .max_by_key(|c| (c.running(), c.started_at.clone()))
    }

    /// The containers that have not exited.
    pub fn running(&self) -> impl Iterator<Item = &Arc<Container>> {
        self.by_id.values().filter(|c| c.running())
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Container>> {
        self.by_id.get(id)
    }

    /// Containers changed since the last call, for the store; and the retiring ones that exited,
    /// which are forgotten now that they are taken.
    pub fn take_changed(&mut self) -> (Vec<Arc<Container>>, Vec<Arc<Container>>) {
        let changed = std::mem::take(&mut self.changed);
        let taken = changed.iter().filter_map(|id| self.by_id.get(id)).cloned().collect();
        let exited: Vec<String> =
            self.retiring.iter().filter(|id| self.by_id.get(*id).is_none_or(|c| !c.running())).cloned().collect();
        let mut forgotten = Vec::new();
        for id in &exited {
            self.retiring.remove(id);
            forgotten.extend(self.by_id.remove(id));
        }
        (taken, forgotten)
    }

    /// Nothing more will be seen of this container's cgroups: forget it once it has exited and
    /// its record is taken. `ended` is when its cgroup was found removed, if it was: a container
    /// without a cgroup runs no more, whether or not its runtime said so (a runtime that failed
    /// to start it says nothing).
    pub fn retire(&mut self, id: &str, ended: Option<&str>) {
        self.retiring.insert(id.to_string());
        let Some(ended) = ended else { return };
        if let Some(known) = self.by_id.get(id).filter(|c| c.running()) {
            let exited = Container { exited_at: Some(ended.to_string()), ..Container::clone(known) };
            self.by_id.insert(id.to_string(), Arc::new(exited));
            self.changed.insert(id.to_string());
        }
    }

    /// How many containers are kept.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containers::State;

    const ID: &str = "3f4e1a7c9b2d8e6f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071";
    const T: &str = "2026-11-23T00:00:00Z";

    fn described(id: &str, cgroup: &str) -> Container {
        Container {
            id: id.into(),
            name: "web".into(),
            image: Some("nginx".into()),
            runtime: Runtime::Docker,
            pod_uid: None,
            cgroup: cgroup.into(),
            init_pid: Some(1),
            created_at: None,
            started_at: Some("2026-11-23T00:00:00Z".into()),
            exited_at: None,
            granted: None,
            layers: Vec::new(),
        }
    }

    #[test]
    fn cgroups_map_to_described_containers_then_to_their_paths() {
        let mut catalog = Catalog::default();
        catalog.apply(Event::Started(Box::new(described(ID, &format!("/docker/{ID}")))));
        assert_eq!(catalog.for_cgroup(&format!("/docker/{ID}")).map(|c| c.name.as_str()), Some("web"));
        // A nested cgroup is the container's too.
        assert_eq!(catalog.for_cgroup(&format!("/docker/{ID}/inner")).map(|c| c.name.as_str()), Some("web"));
        assert_eq!(catalog.learn(&format!("/docker/{ID}/inner"), |_| PathBuf::new()).as_deref(), Some(ID));
        // A container nobody described is named by its short id once its cgroup is learned.
        let other = "b".repeat(64);
        let path = format!("/system.slice/docker-{other}.scope");
        assert!(catalog.for_cgroup(&path).is_none());
        let learned = catalog.learn(&path, |_| PathBuf::new()).expect("a container's cgroup");
        assert_eq!(catalog.get(&learned).map(|c| c.name.clone()), Some("b".repeat(12)));
        assert_eq!(catalog.learn("/user.slice", |_| PathBuf::new()), None);
        assert_eq!(catalog.take_changed().0.len(), 2);
        assert!(catalog.take_changed().0.is_empty());
    }

    #[test]
    fn a_retired_container_goes_once_it_exited_and_was_taken() {
        let mut catalog = Catalog::default();
        catalog.apply(Event::Started(Box::new(described(ID, "/docker/x"))));
        catalog.retire(ID, None);
        assert_eq!(catalog.take_changed(), (vec![catalog.get(ID).cloned().unwrap()], vec![]), "running: kept");
        catalog.apply(Event::Exited { id: ID.into(), at: "2026-11-23T01:00:00Z".into() });
        let (taken, gone) = catalog.take_changed();
        assert_eq!(
            (taken.len(), gone.len(), gone[0].id.as_str()),
            (1, 1, ID),
            "its exit is written, then it is forgotten"
        );
        assert!(catalog.is_empty());
    }

    #[test]
    fn a_container_gone_before_its_inspection_keeps_the_name_docker_gave_it() {
        let mut catalog = Catalog::default();
        let path = format!("/docker/{ID}");
        assert_eq!(catalog.learn(&path, |_| PathBuf::new()).as_deref(), Some(ID));
        catalog.apply(Event::Named {
            id: ID.into(),
            name: "quick".into(),
            image: Some("busybox".into()),
            layers: vec!["/var/lib/docker/overlay2/busybox/diff".into()],
            at: T.into(),
        });
        let named = catalog.get(ID).expect("kept");
        assert_eq!(
            (named.name.as_str(), named.image.as_deref(), named.cgroup.as_str()),
            ("quick", Some("busybox"), path.as_str())
        );
        assert_eq!(named.layers, ["/var/lib/docker/overlay2/busybox/diff"], "its image's layers");
        // Named first, its cgroup learned later: the same container.
        let mut catalog = Catalog::default();
        catalog.apply(Event::Named {
            id: ID.into(),
            name: "quick".into(),
            image: None,
            layers: Vec::new(),
            at: T.into(),
        });
        assert_eq!(catalog.learn(&path, |_| PathBuf::new()).as_deref(), Some(ID));
        assert_eq!(catalog.get(ID).map(|c| (c.name.as_str(), c.cgroup.as_str())), Some(("quick", path.as_str())));
    }

    #[test]
    fn a_container_whose_cgroup_went_without_a_start_failed_to_start() {
        let mut catalog = Catalog::default();
        catalog.apply(Event::Created { id: ID.into(), name: "broken".into(), image: None, at: T.into() });
        assert_eq!(catalog.learn(&format!("/docker/{ID}"), |_| PathBuf::new()).as_deref(), Some(ID));
        assert_eq!(catalog.get(ID).map(|c| c.state()), Some(State::Running));
        catalog.retire(ID, Some("2026-11-23T00:00:01Z"));
        let (taken, gone) = catalog.take_changed();
        assert_eq!((taken[0].name.as_str(), taken[0].state()), ("broken", State::FailedToStart));
        assert_eq!(gone.len(), 1, "forgotten once written");

        // Started, its cgroup gone before Docker's exit event: exited.
        let mut catalog = Catalog::default();
        catalog.apply(Event::Created { id: ID.into(), name: "web".into(), image: None, at: T.into() });
        catalog.apply(Event::Started(Box::new(described(ID, "/docker/x"))));
        catalog.retire(ID, Some("2026-11-23T00:00:01Z"));
        assert_eq!(catalog.take_changed().0[0].state(), State::Exited("2026-11-23T00:00:01Z"));
    }

    #[test]
    fn exits_are_kept_and_stale_running_containers_are_closed_on_load() {
        let mut catalog = Catalog::default();
        catalog.apply(Event::Started(Box::new(described(ID, "/docker/x"))));
        catalog.apply(Event::Exited { id: ID.into(), at: "2026-11-23T01:00:00Z".into() });
        assert_eq!(catalog.get(ID).and_then(|c| c.exited_at.as_deref()), Some("2026-11-23T01:00:00Z"));

        let loaded = Catalog::load(vec![described(ID, "/docker/gone")], |_| false, "2026-11-24T00:00:00Z");
        assert_eq!(loaded.get(ID).and_then(|c| c.exited_at.as_deref()), Some("2026-11-24T00:00:00Z"));
    }
}
