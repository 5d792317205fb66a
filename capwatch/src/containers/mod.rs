//! Containers: who a cgroup belongs to (from its path, and from the runtime's API where one
//! answers), what the container was granted, and finding one by the name or id a user types.

pub mod catalog;
pub mod docker;
pub mod identity;
pub mod kubernetes;
pub mod recreate;
pub mod systemd;

pub use identity::{Identity, Runtime};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A container as capwatch knows it, running or long gone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    /// Full 64-hex id.
    pub id: String,
    /// The runtime's name for it (`web-1`), or its short id when no runtime API named it.
    pub name: String,
    pub image: Option<String>,
    pub runtime: Runtime,
    pub pod_uid: Option<String>,
    /// Its cgroup's path in the cgroup2 hierarchy.
    pub cgroup: String,
    pub init_pid: Option<u32>,
    /// When its runtime created it, where the runtime said (RFC 3339).
    #[serde(default)]
    pub created_at: Option<String>,
    /// RFC 3339.
    pub started_at: Option<String>,
    pub exited_at: Option<String>,
    pub granted: Option<Granted>,
    /// Its image's layers on the host, the topmost first (overlayfs' upper and lower
    /// directories): where its program files are read once its processes are gone.
    #[serde(default)]
    pub layers: Vec<String>,
}

/// What the container was started with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Granted {
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub security_opt: Vec<String>,
    /// The init process's effective and bounding sets at start (/proc/<pid>/status).
    pub cap_eff: Option<u64>,
    pub cap_bnd: Option<u64>,
    /// The user it runs as, where it was set (`--user`, systemd's `User=`).
    #[serde(default)]
    pub user: Option<String>,
}

impl Container {
    /// A container known only from its cgroup path.
    pub fn from_identity(identity: &Identity) -> Self {
        Self {
            id: identity.id.clone(),
            name: short_id(&identity.id).to_string(),
            image: None,
            runtime: identity.runtime,
            pod_uid: identity.pod_uid.clone(),
            cgroup: identity.cgroup.clone(),
            init_pid: None,
            created_at: None,
            started_at: None,
            exited_at: None,
            granted: None,
            layers: Vec::new(),
        }
    }

    /// A Docker container of the unit tests: `id` repeated to 64 digits, named `name`.
    #[cfg(test)]
    pub fn for_tests(id: &str, name: &str, granted: Option<Granted>) -> Self {
        Self {
            id: id.repeat(64 / id.len()),
            name: name.into(),
            granted,
            ..Self::from_identity(&Identity {
                runtime: Runtime::Docker,
                id: String::new(),
                pod_uid: None,
                cgroup: String::new(),
            })
        }
    }

    pub fn short_id(&self) -> &str {
        short_id(&self.id)
    }

    pub fn running(&self) -> bool {
        self.exited_at.is_none()
    }

    /// Running; exited; or created by its runtime, which never said it started before its cgroup
    /// was gone (the runtime failed to start its process: `docker run` errored).
    pub fn state(&self) -> State<'_> {
        match &self.exited_at {
            None => State::Running,
            Some(_) if self.created_at.is_some() && self.started_at.is_none() => State::FailedToStart,
            Some(at) => State::Exited(at),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State<'a> {
    Running,
    Exited(&'a str),
    FailedToStart,
}

pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Finds the container a user named, as the docker CLI does: a full id, a name, or a unique
/// prefix of an id.
pub fn resolve<'a>(query: &str, containers: &'a [Container]) -> Result<&'a Container, Error> {
    let wanted = query.strip_prefix('/').unwrap_or(query);
    if wanted.is_empty() {
        return Err(Error::UnknownContainer(query.to_string()));
    }
    if let Some(exact) = containers.iter().find(|c| c.id == wanted.to_ascii_lowercase()) {
        return Ok(exact);
    }
    // A name is unique among running containers, but an exited one may share it: the newest wins.
    let mut named: Vec<&Container> = containers.iter().filter(|c| c.name == wanted).collect();
    named.sort_by(|a, b| b.started_at.cmp(&a.started_at));
    if let Some(newest) = named.first() {
        return Ok(newest);
    }
    let prefix = wanted.to_ascii_lowercase();
    let matches: Vec<&Container> = containers.iter().filter(|c| c.id.starts_with(&prefix)).collect();
    match matches[..] {
        [one] => Ok(one),
        [] => Err(Error::UnknownContainer(query.to_string())),
        _ => Err(Error::AmbiguousContainer {
            query: query.to_string(),
            candidates: matches.iter().map(|c| format!("{} ({})", c.short_id(), c.name)).collect::<Vec<_>>().join(", "),
        }),
    }
}

/// `CapEff:`/`CapBnd:` of a process, from /proc.
pub fn proc_caps(pid: u32) -> (Option<u64>, Option<u64>) {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return (None, None) };
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    (field("CapEff:"), field("CapBnd:"))
}

/// A process's cgroup2 path (`0::/docker/<id>` in /proc/<pid>/cgroup).
pub fn proc_cgroup(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("0::")).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, name: &str, started: &str) -> Container {
        Container { started_at: Some(started.into()), ..Container::for_tests(id, name, None) }
    }

    #[test]
    fn resolves_like_the_docker_cli() {
        let all = vec![
            container("abcd", "web", "2026-01-01"),
            container("abce", "db", "2026-01-02"),
            container("1234", "cache", "2026-01-03"),
        ];
        assert_eq!(resolve("web", &all).unwrap().name, "web");
        assert_eq!(resolve("/db", &all).unwrap().name, "db");
        assert_eq!(resolve("12", &all).unwrap().name, "cache");
        assert_eq!(resolve(&"abcd".repeat(16), &all).unwrap().name, "web");
        assert_eq!(resolve("ABCDABCD", &all).unwrap().name, "web");
        match resolve("abc", &all) {
            Err(Error::AmbiguousContainer { candidates, .. }) => {
                assert!(candidates.contains("(web)") && candidates.contains("(db)"), "{candidates}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(resolve("nope", &all), Err(Error::UnknownContainer(q)) if q == "nope"));
        assert!(matches!(resolve("", &all), Err(Error::UnknownContainer(_))));
    }

    #[test]
    fn a_name_beats_an_id_prefix_and_the_newest_of_a_name_wins() {
        let mut all = vec![container("beef", "1234", "2026-01-01"), container("1234", "x", "2026-01-02")];
        assert_eq!(resolve("1234", &all).unwrap().name, "1234");
        all.push(container("cafe", "1234", "2026-02-01"));
        assert!(resolve("1234", &all).unwrap().id.starts_with("cafe"));
    }

    #[test]
    fn decodes_proc_status_of_this_process() {
        let (eff, bnd) = proc_caps(std::process::id());
        assert!(eff.is_some() && bnd.is_some());
        assert!(proc_cgroup(std::process::id()).is_some_and(|p| p.starts_with('/')));
    }
}
