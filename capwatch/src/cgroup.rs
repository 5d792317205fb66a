//! The cgroup2 hierarchy: where it is mounted, a cgroup's id from its path and its path from its
//! id. The kernel tags every observation with a cgroup2 id, the inode of the cgroup's directory.

use std::{
    fs,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::error::Error;

/// The id the kernel gives the cgroup2 root.
pub const ROOT_ID: u64 = 1;

/// A mounted cgroup2 hierarchy.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    mount: PathBuf,
    /// Directory handle on the mount, for `open_by_handle_at`.
    mount_dir: Arc<fs::File>,
}

/// Which cgroups the kernel side watches: a subtree, with or without its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    pub root_id: u64,
    /// Depth of the root below the hierarchy's root (0 for the hierarchy's root).
    pub level: u32,
    pub include_root: bool,
}

impl Hierarchy {
    /// Finds the cgroup2 mount: `/sys/fs/cgroup` on pure-v2 hosts, `/sys/fs/cgroup/unified` on
    /// hybrid ones, wherever /proc/self/mountinfo says otherwise.
    pub fn find() -> Result<Self, Error> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| Error::io("/proc/self/mountinfo", e))?;
        let mount = cgroup2_mount(&mountinfo).ok_or(Error::NoCgroup2)?;
        Self::at(mount)
    }

    pub fn at(mount: PathBuf) -> Result<Self, Error> {
        let mount_dir = fs::File::open(&mount).map_err(|e| Error::io(&mount, e))?;
        Ok(Self { mount, mount_dir: Arc::new(mount_dir) })
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The absolute directory of a cgroup named by its path in the hierarchy (`/docker`) or by
    /// its directory (`/sys/fs/cgroup/unified/docker`).
    pub fn dir(&self, cgroup: &Path) -> PathBuf {
        if cgroup.starts_with(&self.mount) {
            cgroup.to_path_buf()
        } else {
            self.mount.join(cgroup.strip_prefix("/").unwrap_or(cgroup))
        }
    }

    /// The scope that watches `cgroup` and everything below it.
    pub fn scope(&self, cgroup: &Path, include_root: bool) -> Result<Scope, Error> {
        let dir = self.dir(cgroup);
        let meta = fs::metadata(&dir)
            .map_err(|_| Error::NotACgroup { path: cgroup.to_path_buf(), mount: self.mount.clone() })?;
        if !meta.is_dir() || !dir.join("cgroup.procs").exists() {
            return Err(Error::NotACgroup { path: cgroup.to_path_buf(), mount: self.mount.clone() });
        }
        let relative = dir.strip_prefix(&self.mount).unwrap_or(Path::new(""));
        Ok(Scope { root_id: meta.ino(), level: relative.components().count() as u32, include_root })
    }

    /// Whether a cgroup still exists.
    pub fn exists(&self, id: u64) -> bool {
        self.path(id).is_some()
    }

    /// The cgroup's path in the hierarchy (`/docker/<id>`), or None once it has been removed.
    /// Resolved through the kernel's file handles for cgroupfs (kernfs handles carry the id): one
    /// syscall, no walk of the tree. Falls back to a walk where handles are refused.
    pub fn path(&self, id: u64) -> Option<String> {
        if id == ROOT_ID {
            return Some("/".into());
        }
        match open_by_cgroup_id(&self.mount_dir, id) {
            Ok(dir) => {
                let target = fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).ok()?;
                Some(self.relative_name(&target))
            }
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) || e.raw_os_error() == Some(libc::ENOENT) => None,
            Err(_) => self.walk_for(id),
        }
    }

    /// Cgroups below `root_id` (itself included) that hold processes now.
    pub fn populated_below(&self, root_id: u64) -> Vec<u64> {
        let Some(root) = self.path(root_id) else { return Vec::new() };
        let mut populated = Vec::new();
        let mut stack = vec![self.dir(Path::new(&root))];
        while let Some(dir) = stack.pop() {
            if fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|procs| !procs.trim().is_empty()) {
                if let Ok(meta) = fs::metadata(&dir) {
                    populated.push(meta.ino());
                }
            }
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            stack.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
        populated
    }

    fn walk_for(&self, id: u64) -> Option<String> {
        let mut stack = vec![self.mount.clone()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).ok()?.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                if !meta.is_dir() {
                    continue;
                }
                if meta.ino() == id {
                    return Some(self.relative_name(&entry.path()));
                }
                stack.push(entry.path());
            }
        }
        None
    }

    fn relative_name(&self, dir: &Path) -> String {
        match dir.strip_prefix(&self.mount) {
            Ok(rel) => format!("/{}", rel.display()),
            // The mount seen through a different path (a bind mount): keep what the kernel said.
            Err(_) => dir.display().to_string(),
        }
    }
}

/// The mount point of the first cgroup2 filesystem in a mountinfo text.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mountinfo(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(byte) => out.push(byte as char),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&code);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// kernfs exports cgroups through file handles of type FILEID_KERNFS whose payload is the id.
fn open_by_cgroup_id(mount_dir: &fs::File, id: u64) -> std::io::Result<fs::File> {
    const FILEID_KERNFS: i32 = 0xfe;
    #[repr(C)]
    struct KernfsHandle {
        handle_bytes: u32,
        handle_type: i32,
        id: u64,
    }
    let mut handle = KernfsHandle { handle_bytes: 8, handle_type: FILEID_KERNFS, id };
    // SAFETY: `handle` has the layout of `struct file_handle` with an 8-byte payload.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount_dir.as_raw_fd(),
            (&mut handle as *mut KernfsHandle).cast(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    use std::os::fd::FromRawFd;
    // SAFETY: the kernel just gave us this descriptor and nothing else owns it.
    Ok(unsafe { fs::File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 33 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
";
    const PURE_V2: &str = "\
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn finds_cgroup2_on_hybrid_and_pure_v2_hosts() {
        assert_eq!(cgroup2_mount(HYBRID), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(cgroup2_mount(PURE_V2), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(cgroup2_mount("35 33 0:30 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"), None);
    }

    #[test]
    fn unescapes_mount_points() {
        let line = "34 33 0:29 / /mnt/cgroup\\040two rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(line), Some(PathBuf::from("/mnt/cgroup two")));
    }
}
