//! A Docker engine of the tests' own: its own data root, socket and pid, no network, stopped by
//! pid when the tests end; and the test image, imported from a busybox rootfs without a
//! registry.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// Short, because containerd's sockets live below it and unix socket paths are short.
const ROOT: &str = "/tmp/capwatch-docker";
/// The image the container tests run.
pub const TEST_IMAGE: &str = "capwatch-test:latest";

pub struct Dockerd {
    child: Child,
    socket: PathBuf,
}

impl Dockerd {
    pub fn start() -> Result<Self> {
        let root = Path::new(ROOT);
        stop_stale(&root.join("dockerd.pid"));
        fs::create_dir_all(root).context("creating the Docker test root")?;
        let socket = root.join("docker.sock");
        let log = fs::File::create(root.join("dockerd.log")).context("dockerd.log")?;
        let child = Command::new("dockerd")
            .arg(format!("--data-root={}", root.join("data").display()))
            .arg(format!("--exec-root={}", root.join("exec").display()))
            .arg(format!("--pidfile={}", root.join("dockerd.pid").display()))
            .arg(format!("--host=unix://{}", socket.display()))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting dockerd (is docker.io installed?)")?;
        let mut dockerd = Self { child, socket };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dockerd.docker(&["version"]).output().is_ok_and(|o| o.status.success()) {
            if let Ok(Some(status)) = dockerd.child.try_wait() {
                bail!("dockerd exited ({status}); see {ROOT}/dockerd.log");
            }
            if Instant::now() > deadline {
                bail!("dockerd did not answer within 60 s; see {ROOT}/dockerd.log");
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
        let rootfs = Path::new(ROOT).join("rootfs");
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
        }
        let tar = Command::new("tar").arg("-C").arg(&rootfs).args(["-cf", "-", "."]).stdout(Stdio::piped()).spawn()?;
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
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A dockerd left by an earlier run that was interrupted.
fn stop_stale(pidfile: &Path) {
    if let Some(pid) = fs::read_to_string(pidfile).ok().and_then(|p| p.trim().parse::<u32>().ok()) {
        if fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "dockerd") {
            terminate(pid);
        }
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
