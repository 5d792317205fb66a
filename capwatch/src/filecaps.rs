//! The capabilities a program file carries (`security.capability`, what `getcap` shows). A file
//! whose effective bit is set makes execve fail with EPERM, with no capability check, when the
//! bounding set lacks any capability in its permitted set (security/commoncap.c,
//! bprm_caps_from_vfs_caps: "insufficient to execute correctly").
//!
//! The file is found as the exec'ing process saw it: through its root (`/proc/<pid>/root`,
//! symlinks resolved inside it) while it runs, or else through the layers of its container's
//! image, which outlive the container.

use std::{
    ffi::CString,
    fs::File,
    os::fd::AsRawFd,
    path::{Component, Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// What a file's `security.capability` grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCaps {
    pub permitted: u64,
    pub inheritable: u64,
    /// The effective bit: the permitted set is raised at exec, and exec fails without it.
    pub effective: bool,
}

/// What reading a program's file capabilities found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "found")]
pub enum Found {
    Caps(FileCaps),
    /// The file carries none.
    Nothing,
    /// The file could not be read: why.
    Unreadable {
        reason: String,
    },
}

const XATTR: &str = "security.capability";
const VFS_CAP_REVISION_MASK: u32 = 0xff00_0000;
const VFS_CAP_REVISION_1: u32 = 0x0100_0000;
const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
const VFS_CAP_REVISION_3: u32 = 0x0300_0000;
const VFS_CAP_FLAGS_EFFECTIVE: u32 = 0x0000_0001;

/// Reads `path` as process `pid` sees it (its root; its working directory for a relative path).
/// An exec of the process's own executable (`/proc/self/exe`, as programs re-exec themselves)
/// is read through the host's `/proc/<pid>/exe`: the container's /proc knows no capwatch
/// process as `self`, and after the exec the file is the one the process runs.
pub fn through_process(pid: u32, path: &str) -> Found {
    if matches!(path, "/proc/self/exe" | "/proc/thread-self/exe") {
        return match File::open(format!("/proc/{pid}/exe")) {
            Ok(file) => read(&file),
            Err(e) => Found::Unreadable { reason: format!("process {pid} is gone ({e})") },
        };
    }
    let base = if path.starts_with('/') { "root" } else { "cwd" };
    let dir = match File::open(format!("/proc/{pid}/{base}")) {
        Ok(dir) => dir,
        Err(e) => return Found::Unreadable { reason: format!("process {pid} is gone ({e})") },
    };
    match open_in_root(&dir, path) {
        Ok(file) => read(&file),
        Err(e) => Found::Unreadable { reason: format!("{path}: {e}") },
    }
}

/// Reads `path` through image layers, the topmost first (overlayfs' upper then lower
/// directories), following symlinks inside the layered tree.
pub fn through_layers(layers: &[PathBuf], path: &str) -> Found {
    match resolve_in_layers(layers, Path::new(path)) {
        Some(real) => match File::open(&real) {
            Ok(file) => read(&file),
            Err(e) => Found::Unreadable { reason: format!("{}: {e}", real.display()) },
        },
        None => Found::Unreadable { reason: format!("{path} is in none of the image's layers") },
    }
}

fn read(file: &File) -> Found {
    let name = CString::new(XATTR).expect("no NUL");
    let mut buf = [0u8; 24];
    // SAFETY: `buf` is valid for its length and `name` is NUL-terminated.
    let n = unsafe { libc::fgetxattr(file.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => Found::Nothing,
            _ => Found::Unreadable { reason: e.to_string() },
        };
    }
    match parse(&buf[..n as usize]) {
        Some(caps) => Found::Caps(caps),
        None => Found::Unreadable { reason: format!("{XATTR} has a layout this kernel ABI does not define") },
    }
}

/// `struct vfs_cap_data` / `vfs_ns_cap_data` (include/uapi/linux/capability.h), little-endian.
pub fn parse(raw: &[u8]) -> Option<FileCaps> {
    let word = |i: usize| raw.get(i * 4..i * 4 + 4).map(|b| u32::from_le_bytes(b.try_into().expect("four bytes")));
    let magic = word(0)?;
    let (permitted, inheritable) = match magic & VFS_CAP_REVISION_MASK {
        VFS_CAP_REVISION_1 => (word(1)? as u64, word(2)? as u64),
        VFS_CAP_REVISION_2 | VFS_CAP_REVISION_3 => {
            (word(1)? as u64 | (word(3)? as u64) << 32, word(2)? as u64 | (word(4)? as u64) << 32)
        }
        _ => return None,
    };
    Some(FileCaps { permitted, inheritable, effective: magic & VFS_CAP_FLAGS_EFFECTIVE != 0 })
}

/// Opens `path` below `root` as if `root` were `/`: symlinks, absolute ones included, stay inside.
fn open_in_root(root: &File, path: &str) -> std::io::Result<File> {
    let path = CString::new(path.trim_start_matches('/')).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: open_how is plain data; all zeros is its "nothing asked" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT;
    // SAFETY: `how` is a valid open_how of the size passed, `path` is NUL-terminated.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            size_of_val(&how),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    use std::os::fd::FromRawFd;
    // SAFETY: the kernel just gave us this descriptor and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd as i32) })
}

/// The real file behind `path` in a layered tree: each component is looked up in the topmost
/// layer that has it, and symlinks are followed inside the tree (at most 40, as the kernel).
fn resolve_in_layers(layers: &[PathBuf], path: &Path) -> Option<PathBuf> {
    let mut pending: Vec<std::ffi::OsString> =
        path.components().filter(|&c| matches!(c, Component::Normal(_))).map(|c| c.as_os_str().to_owned()).collect();
    pending.reverse();
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(component) = pending.pop() {
        if component == ".." {
            resolved.pop();
            continue;
        }
        if component == "." {
            continue;
        }
        let candidate = resolved.join(&component);
        let real = layers.iter().map(|layer| layer.join(&candidate)).find(|p| p.symlink_metadata().is_ok())?;
        match std::fs::read_link(&real) {
            Ok(target) => {
                links += 1;
                if links > 40 {
                    return None;
                }
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                let mut parts: Vec<std::ffi::OsString> = target
                    .components()
                    .filter(|c| !matches!(c, Component::RootDir))
                    .map(|c| c.as_os_str().to_owned())
                    .collect();
                parts.reverse();
                pending.extend(parts);
            }
            Err(_) => resolved = candidate,
        }
    }
    layers.iter().map(|layer| layer.join(&resolved)).find(|p| p.exists())
}

/// `cap_net_raw=ep`, as getcap names what a file carries.
pub fn describe(caps: &FileCaps) -> String {
    let names: Vec<String> =
        crate::names::mask_bits(caps.permitted).map(|c| crate::names::capability(c).to_ascii_lowercase()).collect();
    format!("{}={}", names.join(","), if caps.effective { "ep" } else { "p" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_setcap_writes() {
        // setcap cap_net_raw=ep: revision 2, effective, permitted bit 13.
        let v2 = [0x01, 0, 0, 0x02, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse(&v2), Some(FileCaps { permitted: 1 << 13, inheritable: 0, effective: true }));
        assert_eq!(describe(&parse(&v2).unwrap()), "cap_net_raw=ep");
        // Revision 3 adds the root id; bits above 31 sit in the second word.
        let v3 = [0, 0, 0, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0xe8, 0x03, 0, 0];
        assert_eq!(parse(&v3), Some(FileCaps { permitted: 1 << 32, inheritable: 0, effective: false }));
        assert_eq!(parse(&[0, 0, 0, 0x07]), None);
        assert_eq!(parse(&[0x01]), None);
    }

    #[test]
    fn a_re_exec_of_the_process_itself_reads_the_file_it_runs() {
        assert_eq!(through_process(std::process::id(), "/proc/self/exe"), Found::Nothing);
        assert!(matches!(through_process(u32::MAX, "/proc/self/exe"), Found::Unreadable { .. }));
    }

    #[test]
    fn finds_a_file_through_layers_and_their_symlinks() {
        let root = std::env::temp_dir().join(format!("capwatch-layers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (upper, lower) = (root.join("upper"), root.join("lower"));
        std::fs::create_dir_all(lower.join("usr/bin")).unwrap();
        std::fs::create_dir_all(upper.join("etc/alternatives")).unwrap();
        std::fs::write(lower.join("usr/bin/ping"), "ping").unwrap();
        std::os::unix::fs::symlink("usr/bin", lower.join("bin")).unwrap();
        std::os::unix::fs::symlink("/bin/ping", upper.join("etc/alternatives/ping")).unwrap();
        let layers = [upper.clone(), lower.clone()];
        assert_eq!(resolve_in_layers(&layers, Path::new("/bin/ping")), Some(lower.join("usr/bin/ping")));
        assert_eq!(resolve_in_layers(&layers, Path::new("/etc/alternatives/ping")), Some(lower.join("usr/bin/ping")));
        assert_eq!(resolve_in_layers(&layers, Path::new("/bin/absent")), None);
        assert_eq!(through_layers(&layers, "/bin/ping"), Found::Nothing);
        let _ = std::fs::remove_dir_all(root);
    }
}
