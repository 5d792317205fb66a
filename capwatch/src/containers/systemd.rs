//! systemd's services as capwatch's containers: the cgroup of a unit `NAME.service` (below
//! system.slice, or a user manager's `user@UID.service/…/NAME.service`), named as systemd names
//! it, holding what its processes were given (their bounding and effective sets, their user),
//! read from /proc as Docker's containers' are.

use std::path::Path;

use super::{proc_caps, Container, Granted, Identity, Runtime};

/// The unit a cgroup path belongs to: its deepest `*.service` component (a user's service
/// rather than the user manager holding it).
pub fn parse(components: &[&str]) -> Option<Identity> {
    let at = components.iter().rposition(|c| c.ends_with(".service") && c.len() > ".service".len())?;
    let cgroup = format!("/{}", components[..=at].join("/"));
    Some(Identity { runtime: Runtime::Systemd, id: id(&cgroup), pod_uid: None, cgroup })
}

/// A unit's id: 64 hex digits from its cgroup path (four FNV-1a hashes with different offsets),
/// the same across restarts of the unit and of capwatch.
fn id(cgroup: &str) -> String {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    [0xcbf2_9ce4_8422_2325u64, 0x84222325cbf29ce4, 0x9ce484222325cbf2, 0x2325cbf29ce48422]
        .iter()
        .map(|&offset| cgroup.bytes().fold(offset, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME)))
        .map(|h| format!("{h:016x}"))
        .collect()
}

/// The unit's name: the last component of its cgroup.
pub fn name(identity: &Identity) -> String {
    identity.cgroup.rsplit('/').next().unwrap_or_default().to_string()
}

/// What a process of the unit's cgroup holds, read while it runs: where the unit's settings
/// (CapabilityBoundingSet=, AmbientCapabilities=, User=) left it.
pub fn describe(container: &mut Container, cgroup_dir: &Path) {
    let procs = std::fs::read_to_string(cgroup_dir.join("cgroup.procs")).unwrap_or_default();
    let Some(pid) = procs.lines().find_map(|l| l.trim().parse::<u32>().ok()) else { return };
    let (cap_eff, cap_bnd) = proc_caps(pid);
    let uid = std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|status| {
        status.lines().find_map(|l| l.strip_prefix("Uid:")?.split_whitespace().next()?.parse::<u32>().ok())
    });
    container.init_pid = Some(pid);
    container.granted = Some(Granted { cap_eff, cap_bnd, user: uid.map(user_name), ..Granted::default() });
}

/// A user's name, or its number where the password database has none.
fn user_name(uid: u32) -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null, read at once.
    unsafe {
        let entry = libc::getpwuid(uid);
        if entry.is_null() {
            return uid.to_string();
        }
        std::ffi::CStr::from_ptr((*entry).pw_name).to_string_lossy().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(path: &str) -> Option<(String, String)> {
        let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        parse(&components).map(|i| (name(&i), i.cgroup))
    }

    #[test]
    fn services_are_their_deepest_service_cgroup() {
        assert_eq!(
            parsed("/system.slice/nginx.service"),
            Some(("nginx.service".into(), "/system.slice/nginx.service".into()))
        );
        assert_eq!(
            parsed("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service/sub"),
            Some(("foo.service".into(), "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service".into()))
        );
        assert_eq!(parsed("/user.slice/user-1000.slice/session-1.scope"), None);
        assert_eq!(parsed("/system.slice"), None);
        let a = parse(&["system.slice", "a.service"]).unwrap().id;
        assert_eq!(a.len(), 64);
        assert_eq!(a, parse(&["system.slice", "a.service"]).unwrap().id, "stable");
        assert_ne!(a, parse(&["system.slice", "b.service"]).unwrap().id);
    }
}
