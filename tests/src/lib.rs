//! What capwatch's kernel tests share: the gate that decides whether a test that needs root and
//! BPF runs (in CI it must), cgroups made for one test, and workloads started inside them with
//! capabilities really dropped.

use std::{
    ffi::CString,
    fs,
    io,
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use capwatch::{
    cgroup::{Hierarchy, Scope},
    monitor::Monitor,
    probe,
};

/// Whether this run is CI's, where nothing that needs root or BPF may skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// True when the test can use the kernel (root, BTF, cgroup2). Outside CI a test that cannot
/// says so and skips; in CI it fails.
pub fn kernel_available(test: &str) -> bool {
    let missing = if unsafe { libc::geteuid() } != 0 {
        Some("it needs root")
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("the kernel has no BTF")
    } else if Hierarchy::find().is_err() {
        Some("no cgroup2 hierarchy is mounted")
    } else {
        None
    };
    match missing {
        None => true,
        Some(why) if in_ci() => panic!("{test}: cannot run in CI: {why}"),
        Some(why) => {
            eprintln!("SKIPPED {test}: {why} (run the tests as root; in CI this fails)");
            false
        }
    }
}

/// A cgroup2 directory made for one test, removed when dropped.
pub struct TestCgroup {
    pub dir: PathBuf,
    /// The path in the hierarchy, as capwatch names it (`/capwatch-test-…/a`).
    pub name: String,
    pub id: u64,
}

impl TestCgroup {
    /// A fresh cgroup at the top of the hierarchy.
    pub fn new(label: &str) -> Self {
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        let hierarchy = Hierarchy::find().expect("cgroup2 hierarchy");
        let leaf = format!("capwatch-test-{}-{}-{label}", std::process::id(), SERIAL.fetch_add(1, Ordering::Relaxed));
        Self::make(hierarchy.mount().join(leaf), hierarchy.mount())
    }

    /// A cgroup below this one. Drop it before its parent (declare it after).
    pub fn child(&self, label: &str) -> TestCgroup {
        let hierarchy = Hierarchy::find().expect("cgroup2 hierarchy");
        Self::make(self.dir.join(label), hierarchy.mount())
    }

    fn make(dir: PathBuf, mount: &Path) -> Self {
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let id = fs::metadata(&dir).expect("stat cgroup").ino();
        let name = format!("/{}", dir.strip_prefix(mount).expect("below the mount").display());
        Self { dir, name, id }
    }

    /// The scope that watches this cgroup and everything below it.
    pub fn scope(&self) -> Scope {
        Hierarchy::find().expect("cgroup2").scope(&self.dir, true).expect("scope of a test cgroup")
    }

    /// A monitor with capwatch's real programs attached, watching this cgroup's subtree.
    pub fn monitor(&self) -> Monitor {
        let options = probe::Options { scope: self.scope(), backend: None };
        Monitor::start(options, Hierarchy::find().expect("cgroup2")).expect("attach capwatch's probe")
    }

    /// The same with the capability probe forced to `backend`.
    pub fn monitor_with(&self, backend: probe::Backend) -> Monitor {
        let options = probe::Options { scope: self.scope(), backend: Some(backend) };
        Monitor::start(options, Hierarchy::find().expect("cgroup2"))
            .unwrap_or_else(|e| panic!("attach capwatch's {backend} probe: {e}"))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // The processes a test started have exited; the kernel may take a moment to notice.
        for _ in 0..50 {
            match fs::remove_dir(&self.dir) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => std::thread::sleep(std::time::Duration::from_millis(20)),
                _ => return,
            }
        }
    }
}

/// How a workload is started: in which cgroup, without which capabilities, as which user.
#[derive(Default, Clone)]
pub struct Launch {
    cgroup: Option<PathBuf>,
    drop: Vec<caps::Capability>,
    uid: Option<u32>,
    runtime: bool,
}

impl Launch {
    pub fn in_cgroup(cgroup: &TestCgroup) -> Self {
        Self { cgroup: Some(cgroup.dir.clone()), ..Self::default() }
    }

    /// Removes capabilities from the bounding set before exec, so the program never has them.
    pub fn dropping(mut self, caps: &[caps::Capability]) -> Self {
        self.drop.extend_from_slice(caps);
        self
    }

    /// Starts the program the way an OCI runtime starts a container's command: a process named
    /// like runc's init enters the cgroup, makes a capability check (setuid), then execs.
    pub fn as_runtime(mut self) -> Self {
        self.runtime = true;
        self
    }

    pub fn as_user(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    /// Prepares `command` to start under this launch's conditions.
    pub fn apply(&self, command: &mut Command) {
        let procs = self.cgroup.as_ref().map(|dir| CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).expect("path"));
        let drop: Vec<libc::c_ulong> = self.drop.iter().map(|c| libc::c_ulong::from(c.index())).collect();
        let uid = self.uid;
        let runtime = self.runtime;
        // SAFETY: between fork and exec the closure makes only raw syscalls on memory prepared
        // before the fork.
        unsafe {
            command.pre_exec(move || {
                if let Some(procs) = &procs {
                    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                    if fd < 0 || libc::write(fd, b"0\n".as_ptr().cast(), 2) != 2 {
                        return Err(io::Error::last_os_error());
                    }
                    libc::close(fd);
                }
                if runtime {
                    if libc::prctl(libc::PR_SET_NAME, c"runc:[2:INIT]".as_ptr(), 0, 0, 0) != 0 || libc::setuid(0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                for &cap in &drop {
                    if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if let Some(uid) = uid {
                    if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(uid) != 0 || libc::setuid(uid) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }

    /// Runs the test workload with `args` and waits for it.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new(bin("cw-workload"));
        command.args(args);
        self.apply(&mut command);
        command.output().unwrap_or_else(|e| panic!("cw-workload {args:?}: {e}"))
    }
}

/// A binary of this workspace, built next to the test executables (`cargo build --bins` first;
/// the README's test command does).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let path = profile_dir.join(name);
    assert!(path.exists(), "{} is not built: run `cargo build --bins` first", path.display());
    path
}

/// Exit status 0 = the call succeeded, 2 = the kernel refused it (see cw-workload).
pub fn refused(output: &Output) -> bool {
    output.status.code() == Some(2)
}

/// A root-owned file with mode 000 in a fresh directory, removed when dropped.
pub struct ProtectedFile {
    dir: PathBuf,
    file: PathBuf,
}

impl ProtectedFile {
    pub fn new(label: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("capwatch-test-{}-{label}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod dir");
        let file = dir.join("secret");
        fs::write(&file, "secret\n").expect("write");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o000)).expect("chmod 000");
        Self { dir, file }
    }

    pub fn path(&self) -> &str {
        self.file.to_str().expect("utf-8 path")
    }
}

impl Drop for ProtectedFile {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
