//! A container's identity from its cgroup path alone: which runtime made it, its id, and for
//! Kubernetes its pod. Works without any runtime API, so containers stay named when none answers.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Docker,
    /// containerd's CRI plugin (Kubernetes).
    Containerd,
    Crio,
    Podman,
    /// A command `capwatch run` started in a cgroup of its own.
    Command,
    /// A systemd service.
    Systemd,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::Crio => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Command => "command",
            Runtime::Systemd => "systemd",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Runtime::Docker, Runtime::Containerd, Runtime::Crio, Runtime::Podman, Runtime::Command, Runtime::Systemd]
            .into_iter()
            .find(|r| r.name() == name)
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a cgroup path says about the container it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub runtime: Runtime,
    /// The full 64-hex container id.
    pub id: String,
    /// Kubernetes pod uid, where the path holds one.
    pub pod_uid: Option<String>,
    /// The container's own cgroup (the path up to and including the container's component);
    /// processes in cgroups below it (nested containers, systemd's `container` leaf) are its.
    pub cgroup: String,
}

/// Recognises the outermost container in a cgroup path: the one the host's runtime manages. A
/// container nested inside it (Docker in Docker) acts with the outer one's capabilities. A path
/// in no container may be a systemd service's.
pub fn parse(path: &str) -> Option<Identity> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let mut pod_uid = None;
    for (i, component) in components.iter().enumerate() {
        if let Some(uid) = pod_component(component) {
            pod_uid = Some(uid);
            continue;
        }
        let parent = if i == 0 { "" } else { components[i - 1] };
        if let Some((runtime, id)) = container_component(component, parent, pod_uid.is_some()) {
            return Some(Identity {
                runtime,
                id: id.to_ascii_lowercase(),
                pod_uid,
                cgroup: format!("/{}", components[..=i].join("/")),
            });
        }
    }
    super::systemd::parse(&components)
}

/// `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`
/// (systemd driver), `/docker/<id>`, `/libpod_parent/libpod-<id>`, `/kubepods/…/pod<uid>/<id>`
/// (cgroupfs driver). The runtimes' monitors (`crio-conmon-*`, `libpod-conmon-*`) are not
/// containers.
fn container_component<'a>(component: &'a str, parent: &str, in_pod: bool) -> Option<(Runtime, &'a str)> {
    let unit = component.strip_suffix(".scope").unwrap_or(component);
    const PREFIXED: [(&str, Runtime); 5] = [
        ("docker-", Runtime::Docker),
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::Crio),
        ("libpod-", Runtime::Podman),
        ("containerd-", Runtime::Containerd),
    ];
    for (prefix, runtime) in PREFIXED {
        if let Some(id) = unit.strip_prefix(prefix) {
            return is_container_id(id).then_some((runtime, id));
        }
    }
    if is_container_id(component) {
        let runtime = match parent {
            _ if in_pod => Runtime::Containerd,
            "libpod_parent" => Runtime::Podman,
            _ => Runtime::Docker,
        };
        return Some((runtime, component));
    }
    None
}

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid with _>.slice` (systemd).
fn pod_component(component: &str) -> Option<String> {
    let unit = component.strip_suffix(".slice").unwrap_or(component);
    let start = unit.rfind("pod")?;
    if start > 0 && !unit[..start].ends_with('-') {
        return None;
    }
    if start > 0 && !unit.starts_with("kubepods") {
        return None;
    }
    let uid = unit[start + 3..].replace('_', "-");
    let looks_like_uid =
        uid.len() == 36 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') && uid.matches('-').count() == 4;
    looks_like_uid.then_some(uid)
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e1a7c9b2d8e6f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071";
    const ID2: &str = "aa4e1a7c9b2d8e6f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60bb";

    fn parsed(path: &str) -> (Runtime, String, Option<String>, String) {
        let i = parse(path).unwrap_or_else(|| panic!("{path} is a container"));
        (i.runtime, i.id, i.pod_uid, i.cgroup)
    }

    #[test]
    fn docker_with_either_cgroup_driver() {
        assert_eq!(parsed(&format!("/docker/{ID}")), (Runtime::Docker, ID.into(), None, format!("/docker/{ID}")));
        assert_eq!(
            parsed(&format!("/system.slice/docker-{ID}.scope")),
            (Runtime::Docker, ID.into(), None, format!("/system.slice/docker-{ID}.scope"))
        );
        // --cgroup-parent with the cgroupfs driver.
        assert_eq!(parsed(&format!("/ci-jobs/{ID}")).0, Runtime::Docker);
    }

    #[test]
    fn kubernetes_on_containerd_keeps_the_pod() {
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0d1b7f1e_5c3a_4b7e_9a5d_6e8f2c1b3a4d.slice/cri-containerd-{ID}.scope"
        );
        let (runtime, id, pod, _) = parsed(&systemd);
        assert_eq!((runtime, id.as_str()), (Runtime::Containerd, ID));
        assert_eq!(pod.as_deref(), Some("0d1b7f1e-5c3a-4b7e-9a5d-6e8f2c1b3a4d"));

        let cgroupfs = format!("/kubepods/besteffort/pod0d1b7f1e-5c3a-4b7e-9a5d-6e8f2c1b3a4d/{ID}");
        let (runtime, _, pod, _) = parsed(&cgroupfs);
        assert_eq!(runtime, Runtime::Containerd);
        assert_eq!(pod.as_deref(), Some("0d1b7f1e-5c3a-4b7e-9a5d-6e8f2c1b3a4d"));

        // Guaranteed pods sit directly under kubepods.slice.
        let guaranteed =
            format!("/kubepods.slice/kubepods-pod0d1b7f1e_5c3a_4b7e_9a5d_6e8f2c1b3a4d.slice/cri-containerd-{ID}.scope");
        assert_eq!(parsed(&guaranteed).2.as_deref(), Some("0d1b7f1e-5c3a-4b7e-9a5d-6e8f2c1b3a4d"));
    }

    #[test]
    fn cri_o_and_podman_but_not_their_monitors() {
        let crio = format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0d1b7f1e_5c3a_4b7e_9a5d_6e8f2c1b3a4d.slice/crio-{ID}.scope");
        assert_eq!(parsed(&crio).0, Runtime::Crio);
        // CRI-O and systemd put the processes in a `container` leaf below the scope.
        let leaf = parse(&format!("{crio}/container")).expect("container leaf");
        assert_eq!(leaf.cgroup, crio);
        assert_eq!(parse(&format!("/kubepods.slice/crio-conmon-{ID}.scope")), None);

        assert_eq!(parsed(&format!("/machine.slice/libpod-{ID}.scope")).0, Runtime::Podman);
        assert_eq!(parsed(&format!("/machine.slice/libpod-{ID}.scope/container")).1, ID);
        assert_eq!(parse(&format!("/machine.slice/libpod-conmon-{ID}.scope")), None);
        assert_eq!(parsed(&format!("/libpod_parent/libpod-{ID}")).0, Runtime::Podman);
        // Rootless podman lives in the user's systemd slice.
        let rootless = format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope");
        assert_eq!(parsed(&rootless).0, Runtime::Podman);
    }

    #[test]
    fn nested_containers_belong_to_the_outermost() {
        let dind = format!("/docker/{ID}/docker/{ID2}");
        let (runtime, id, _, cgroup) = parsed(&dind);
        assert_eq!((runtime, id.as_str(), cgroup), (Runtime::Docker, ID, format!("/docker/{ID}")));
    }

    #[test]
    fn not_containers() {
        for path in [
            "/",
            "/user.slice/user-1000.slice/session-3.scope",
            "/docker",
            "/docker/abc123",
            &format!("/docker/{}", &ID[..63]),
            &format!("/docker/{}x", &ID[..63]),
            &format!("/system.slice/docker-{}.scope", &ID[..12]),
            "/kubepods.slice/kubepods-burstable.slice",
        ] {
            assert_eq!(parse(path), None, "{path}");
        }
        // Services are systemd's units, dockerd's and containerd's too.
        for path in ["/system.slice/docker.service", "/system.slice/containerd.service"] {
            assert_eq!(parse(path).map(|i| i.runtime), Some(Runtime::Systemd), "{path}");
        }
    }

    #[test]
    fn ids_are_lowercased() {
        assert_eq!(parsed(&format!("/docker/{}", ID.to_uppercase())).1, ID);
    }
}
