//! A Docker engine of the tests' own: its own data root, socket and pid, no network, stopped by
//! pid when the tests end; and the test image, imported from a busybox rootfs without a
//! registry.
//!
//! `CAPWATCH_TEST_DOCKER_ROOT` moves the engine's root elsewhere, and `CAPWATCH_TEST_DOCKER_NETNS`
//! starts it in a named network namespace (made if missing, removed again if made here), so that
//! a second engine can run beside another one on the same machine.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// Short, because containerd's sockets live below it and unix socket paths are short.
const DEFAULT_ROOT: &str = "/tmp/capwatch-docker";
/// The image the container tests run.
pub const TEST_IMAGE: &str = "capwatch-test:latest";

pub struct Dockerd {
    child: Child,
    socket: PathBuf,
    root: PathBuf,
    /// The network namespace made for this engine, removed after it stops.
    made_netns: Option<String>,
}

/// The engine's root: `CAPWATCH_TEST_DOCKER_ROOT`, or the default.
fn root() -> PathBuf {
    std::env::var_os("CAPWATCH_TEST_DOCKER_ROOT")
        .filter(|r| !r.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_ROOT), PathBuf::from)
}

/// `CAPWATCH_TEST_DOCKER_NETNS`: a named network namespace for the engine; made (with its
/// loopback up) if missing. Returns whether it was made here.
fn netns() -> Result<Option<(String, bool)>> {
    let Some(name) = std::env::var("CAPWATCH_TEST_DOCKER_NETNS").ok().filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if Path::new("/run/netns").join(&name).exists() {
        return Ok(Some((name, false)));
    }
    for args in [vec!["netns", "add", &name], vec!["-n", &name, "link", "set", "lo", "up"]] {
        let status = Command::new("ip").args(&args).status().context("running ip (is iproute2 installed?)")?;
        if !status.success() {
            bail!("ip {} failed ({status})", args.join(" "));
        }
    }
    Ok(Some((name, true)))
}

impl Dockerd {
    pub fn start() -> Result<Self> {
        let root = root();
        let root = root.as_path();
        stop_stale(&root.join("dockerd.pid"));
        fs::create_dir_all(root).context("creating the Docker test root")?;
        let socket = root.join("docker.sock");
        let log = fs::File::create(root.join("dockerd.log")).context("dockerd.log")?;
        let netns = netns()?;
        // nsenter enters only the network namespace (`ip netns exec` would also remount /sys,
        // hiding the cgroup mounts dockerd needs) and execs dockerd, keeping its pid.
        let mut command = match &netns {
            Some((name, _)) => {
                let mut nsenter = Command::new("nsenter");
                nsenter.arg(format!("--net=/run/netns/{name}")).arg("dockerd");
                nsenter
            }
            None => Command::new("dockerd"),
        };
        let child = command
            .arg(format!("--data-root={}", root.join("data").display()))
            .arg(format!("--exec-root={}", root.join("exec").display()))
            .arg(format!("--pidfile={}", root.join("dockerd.pid").display()))
            .arg(format!("--host=unix://{}", socket.display()))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting dockerd (is docker.io installed?)")?;
        let made_netns = netns.and_then(|(name, made)| made.then_some(name));
        let mut dockerd = Self { child, socket, root: root.to_path_buf(), made_netns };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dockerd.docker(&["version"]).output().is_ok_and(|o| o.status.success()) {
            if let Ok(Some(status)) = dockerd.child.try_wait() {
                bail!("dockerd exited ({status}); see {}/dockerd.log", root.display());
            }
            if Instant::now() > deadline {
                bail!("dockerd did not answer within 60 s; see {}/dockerd.log", root.display());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(dockerd)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A `docker` command talking to this engine.
    pub fn docker(&self, args: &[&str]) -> Command {
        let mut docker = Command::new("docker");
        docker.arg("--host").arg(format!("unix://{}", self.socket.display())).args(args);
        docker
    }

    /// Imports the test image: busybox-static with its applets, and `programs` in /bin.
    pub fn import_test_image(&self, programs: &[PathBuf]) -> Result<()> {
        let rootfs = self.root.join("rootfs");
        let _ = fs::remove_dir_all(&rootfs);
        let bin = rootfs.join("bin");
        fs::create_dir_all(&bin)?;
        for dir in ["tmp", "etc", "proc", "sys", "dev"] {
            fs::create_dir_all(rootfs.join(dir))?;
        }
        fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")?;
        fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
        fs::copy("/bin/busybox", bin.join("busybox")).context("copying /bin/busybox (is busybox-static installed?)")?;
        let list = Command::new("/bin/busybox").arg("--list").output().context("busybox --list")?;
        for applet in String::from_utf8_lossy(&list.stdout).lines().filter(|a| *a != "busybox" && !a.is_empty()) {
            symlink("busybox", bin.join(applet))?;
        }
        for program in programs {
            let name = program.file_name().context("program name")?;
            fs::copy(program, bin.join(name)).with_context(|| format!("copying {}", program.display()))?;
            // The same program carrying a file capability, as ping does on Debian.
            if name == "cw-workload" {
                let capped = bin.join(CAPPED_WORKLOAD);
                fs::copy(program, &capped)?;
                set_file_capability(&capped, CAP_NET_RAW)?;
            }
        }
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["--xattrs", "--xattrs-include=security.capability", "-cf", "-", "."])
            .stdout(Stdio::piped())
            .spawn()?;
        let status = self
            .docker(&["import", "--change", "ENV PATH=/bin", "-", TEST_IMAGE])
            .stdin(tar.stdout.context("tar output")?)
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("docker import failed ({status})");
        }
        Ok(())
    }
}

/// `cw-workload` with the file capability `cap_net_raw=ep`, in the test image's /bin.
pub const CAPPED_WORKLOAD: &str = "cw-workload-net-raw";
const CAP_NET_RAW: u32 = 13;

/// Gives `path` the file capability `cap=ep`: a `security.capability` xattr in the layout of
/// include/uapi/linux/capability.h (struct vfs_cap_data, revision 2, little-endian words).
fn set_file_capability(path: &Path, cap: u32) -> Result<()> {
    const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
    const VFS_CAP_FLAGS_EFFECTIVE: u32 = 0x1;
    let words = [VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE, 1 << cap, 0, 0, 0];
    let value: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: NUL-terminated name and path, and a buffer of the given length.
    let rc = unsafe {
        libc::setxattr(c_path.as_ptr(), c"security.capability".as_ptr(), value.as_ptr().cast(), value.len(), 0)
    };
    if rc != 0 {
        bail!("setting the file capability of {}: {}", path.display(), std::io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Containers first, so that their cgroups and mounts go away with them.
        if let Ok(out) = self.docker(&["ps", "-aq"]).output() {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "--force"];
                args.extend(ids.iter().map(String::as_str));
                let _ = self.docker(&args).output();
            }
        }
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut stopped = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                stopped = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // A test may have restarted the engine: the pid file names the one running now.
        stop_stale(&self.root.join("dockerd.pid"));
        if let Some(name) = &self.made_netns {
            let _ = Command::new("ip").args(["netns", "delete", name]).status();
        }
    }
}

/// A dockerd left by an earlier run that was interrupted. Its pid file goes too: a dockerd that
/// had to be killed leaves it behind, and a new one refuses to start while the pid in it names
/// any running process.
fn stop_stale(pidfile: &Path) {
    if let Some(pid) = fs::read_to_string(pidfile).ok().and_then(|p| p.trim().parse::<u32>().ok()) {
        if fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "dockerd") {
            terminate(pid);
        }
        let _ = fs::remove_file(pidfile);
    }
}

fn terminate(pid: u32) {
    let pid = pid.to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    for _ in 0..100 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill").args(["-KILL", &pid]).status();
}
