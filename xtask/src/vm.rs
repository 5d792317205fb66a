//! `cargo xtask vm-test`: capwatch's backend tests on the kernels its users run. Each kernel is
//! Debian's own build, booted under qemu's software emulation from an initramfs that holds
//! busybox and static builds of the backend tests, `capwatch` and `cw-workload`; inside, the
//! tests run once per capability backend and print one result line each.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader, Write as _},
    os::unix::fs::{symlink, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{apt::apt, statics};

/// A kernel series to boot, and what capwatch must find there.
struct Kernel {
    series: &'static str,
    /// `apt-cache search --names-only` pattern of its cloud image packages; the newest is used.
    package: &'static str,
    /// Backends that must attach and pass every scenario.
    attach: &'static [&'static str],
    /// Backends that must be refused with a clear reason.
    refused: &'static [&'static str],
}

/// Debian 12's kernel and its backport. Neither has the capability tracepoint (6.14+); both
/// have kprobes and BPF trampolines.
const KERNELS: [Kernel; 2] = [
    Kernel {
        series: "6.1",
        package: r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$",
        attach: &["fexit", "kprobe"],
        refused: &["tracepoint"],
    },
    Kernel {
        series: "6.12",
        package: r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64-unsigned$",
        attach: &["fexit", "kprobe"],
        refused: &["tracepoint"],
    },
];

/// Where kernels, the initramfs and the consoles' logs go.
const WORK_DIR: &str = "target/vm";

/// A whole boot, tests included, under TCG. One boot takes well under a minute; the margin is
/// for a loaded CI machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

/// One line of the table.
struct Row {
    kernel: String,
    backend: String,
    expected: &'static str,
    outcome: String,
    passed: bool,
}

pub fn run(root: &Path) -> Result<()> {
    if !running_as_root() {
        bail!("vm-test needs root: it installs qemu and makes /dev/console in the initramfs (sudo ./x test)");
    }
    let work = root.join(WORK_DIR);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    ensure_qemu()?;
    let kernels = KERNELS.iter().map(|k| fetch_kernel(k, &work).map(|image| (k, image))).collect::<Result<Vec<_>>>()?;
    let built = build(root)?;
    let initramfs = pack_initramfs(&built, &work)?;

    let mut rows = Vec::new();
    for (kernel, image) in &kernels {
        rows.extend(boot(kernel, image, &initramfs, &work)?);
    }
    print_table(&rows);
    let failed = rows.iter().filter(|r| !r.passed).count();
    if failed > 0 {
        bail!("{failed} kernel × backend combination(s) failed; the consoles are in {}", work.display());
    }
    Ok(())
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Debian's qemu-system-x86 conflicts with newer qemu-utils (the image's backport); apt-get
/// replaces them, which capwatch does not mind: it needs no qemu-img.
fn ensure_qemu() -> Result<()> {
    if on_path("qemu-system-x86_64") {
        return Ok(());
    }
    eprintln!("vm-test: installing qemu-system-x86");
    apt(&["update", "-qq"])?;
    apt(&["install", "-y", "-qq", "--no-install-recommends", "qemu-system-x86"])
}

/// The newest package of the series, downloaded and unpacked once; returns its vmlinuz.
fn fetch_kernel(kernel: &Kernel, work: &Path) -> Result<PathBuf> {
    let mut packages = search(kernel.package)?;
    if packages.is_empty() {
        apt(&["update", "-qq"])?;
        packages = search(kernel.package)?;
    }
    let Some(package) = packages.into_iter().max_by_key(|name| version_key(name)) else {
        bail!("no package matches {} (is bookworm-security in the apt sources?)", kernel.package);
    };
    let dir = work.join("kernels").join(&package);
    if find_vmlinuz(&dir).is_none() {
        let downloads = work.join("downloads");
        fs::create_dir_all(&downloads)?;
        // apt's download sandbox user must be able to write here.
        fs::set_permissions(&downloads, fs::Permissions::from_mode(0o777))?;
        eprintln!("vm-test: downloading {package}");
        let status = Command::new("apt-get").args(["download", "-qq", &package]).current_dir(&downloads).status()?;
        if !status.success() {
            bail!("apt-get download {package} failed ({status})");
        }
        let deb = fs::read_dir(&downloads)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
            })
            .with_context(|| format!("apt-get download left no .deb for {package}"))?;
        fs::create_dir_all(&dir)?;
        let status = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir).status()?;
        if !status.success() {
            bail!("dpkg-deb -x {} failed ({status})", deb.display());
        }
        fs::remove_file(&deb)?;
    }
    find_vmlinuz(&dir).with_context(|| format!("{package} holds no boot/vmlinuz-*"))
}

fn search(pattern: &str) -> Result<Vec<String>> {
    let out =
        Command::new("apt-cache").args(["search", "--names-only", pattern]).output().context("running apt-cache")?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split(" - ").next()).map(str::to_string).collect())
}

/// The numbers in a package name, compared as numbers: 6.1.0-56 after 6.1.0-9.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).filter_map(|s| s.parse().ok()).collect()
}

fn find_vmlinuz(dir: &Path) -> Option<PathBuf> {
    fs::read_dir(dir.join("boot"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz-")))
}

/// The static programs that go into the VM.
struct Built {
    tests: PathBuf,
    capwatch: PathBuf,
    workload: PathBuf,
}

/// Static builds: the VM has no C library. The test binary finds `capwatch` and `cw-workload`
/// one directory above its own, as in cargo's layout. Paths come from cargo's own report, so a
/// `CARGO_TARGET_DIR` is honoured.
fn build(root: &Path) -> Result<Built> {
    let bins = executables(
        root,
        &[
            "build",
            "--release",
            "--package",
            "capwatch",
            "--bin",
            "capwatch",
            "--package",
            "capwatch-tests",
            "--bin",
            "cw-workload",
        ],
    )?;
    let tests =
        executables(root, &["test", "--release", "--no-run", "--package", "capwatch-tests", "--test", "backends"])?;
    let find = |found: &[(String, PathBuf)], name: &str| {
        found.iter().find(|(n, _)| n == name).map(|(_, p)| p.clone()).with_context(|| format!("cargo built no {name}"))
    };
    Ok(Built {
        tests: find(&tests, "backends")?,
        capwatch: find(&bins, "capwatch")?,
        workload: find(&bins, "cw-workload")?,
    })
}

/// Runs a static cargo build and returns the (target name, executable) pairs it reports.
fn executables(root: &Path, args: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    let out = statics::static_cargo(root)
        .args(args)
        .arg("--message-format=json")
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !out.status.success() {
        bail!("static cargo {} failed ({})", args.join(" "), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .filter_map(|msg| {
            Some((msg["target"]["name"].as_str()?.to_string(), PathBuf::from(msg["executable"].as_str()?)))
        })
        .collect())
}

/// Runs inside the VM as pid 1. The kernel hands `cw_attach=` and `cw_refused=` from its command
/// line to init as environment variables.
const INIT: &str = r#"#!/bin/sh
export PATH=/bin HOME=/ CI=true
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo "CW-KERNEL $(uname -r)"
result() {
    echo "CW-RESULT backend=$1 expected=$2 rc=$3 seconds=$(( $(date +%s) - $4 ))"
}
for backend in $(echo "$cw_attach" | tr , ' '); do
    start=$(date +%s)
    CAPWATCH_TEST_BACKEND=$backend CAPWATCH_TEST_REFUSED= /cw/release/deps/backends --test-threads=1
    result "$backend" attach $? "$start"
done
for backend in $(echo "$cw_refused" | tr , ' '); do
    start=$(date +%s)
    CAPWATCH_TEST_BACKEND= CAPWATCH_TEST_REFUSED=$backend /cw/release/deps/backends --test-threads=1 refuses
    result "$backend" refused $? "$start"
done
echo CW-DONE
poweroff -f
"#;

fn pack_initramfs(built: &Built, work: &Path) -> Result<PathBuf> {
    let dir = work.join("initramfs");
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    for sub in ["bin", "dev", "proc", "sys", "tmp", "cw/release/deps"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    fs::copy("/bin/busybox", dir.join("bin/busybox")).context("copying /bin/busybox (is busybox-static installed?)")?;
    let applets = Command::new("/bin/busybox").arg("--list").output().context("busybox --list")?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines().filter(|a| !a.is_empty() && *a != "busybox") {
        symlink("busybox", dir.join("bin").join(applet))?;
    }
    fs::copy(&built.tests, dir.join("cw/release/deps/backends"))?;
    fs::copy(&built.capwatch, dir.join("cw/release/capwatch"))?;
    fs::copy(&built.workload, dir.join("cw/release/cw-workload"))?;
    fs::write(dir.join("init"), INIT)?;
    fs::set_permissions(dir.join("init"), fs::Permissions::from_mode(0o755))?;
    // Unprivileged test processes must be able to reach their programs.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    // The kernel opens it for init's stdio before anything is mounted.
    let status = Command::new("mknod").arg(dir.join("dev/console")).args(["c", "5", "1"]).status()?;
    if !status.success() {
        bail!("mknod dev/console failed ({status})");
    }
    let image = work.join("initramfs.cpio.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg("find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > \"$0\"")
        .arg(&image)
        .current_dir(&dir)
        .status()?;
    if !status.success() {
        bail!("packing the initramfs failed ({status})");
    }
    Ok(image)
}

/// Boots one kernel, streams its console into a log, and reads the result lines.
fn boot(kernel: &Kernel, vmlinuz: &Path, initramfs: &Path, work: &Path) -> Result<Vec<Row>> {
    let log_path = work.join(format!("console-{}.log", kernel.series));
    let mut log = fs::File::create(&log_path)?;
    let append = format!(
        "console=ttyS0 panic=-1 quiet cw_attach={} cw_refused={}",
        kernel.attach.join(","),
        kernel.refused.join(",")
    );
    eprintln!("vm-test: booting {} ({})", kernel.series, vmlinuz.display());
    let started = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "2048", "-smp", "2"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &append])
        .args(["-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio", "-display", "none", "-monitor", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let (tx, lines) = mpsc::channel();
    for pipe in [
        qemu.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        qemu.stderr.take().map(|p| Box::new(p) as _),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);

    let mut release = None;
    let mut results = Vec::new();
    let mut done = false;
    let deadline = started + BOOT_TIMEOUT;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(line) = lines.recv_timeout(left) else { break };
        let line = line.trim_end_matches('\r').to_string();
        writeln!(log, "{line}")?;
        // The firmware's terminal escapes can precede the first line of init.
        let after = |marker: &str| line.find(marker).map(|at| line[at + marker.len()..].trim().to_string());
        if let Some(rest) = after("CW-KERNEL ") {
            release = Some(rest);
        } else if let Some(rest) = after("CW-RESULT ") {
            eprintln!("vm-test: {}: {rest}", kernel.series);
            results.push(fields(&rest));
        } else if after("CW-DONE").is_some() {
            done = true;
        }
    }
    let timed_out = !done && Instant::now() >= deadline;
    if timed_out {
        let _ = qemu.kill();
    }
    let _ = qemu.wait();
    eprintln!(
        "vm-test: {} finished in {:.0} s; console in {}",
        kernel.series,
        started.elapsed().as_secs_f64(),
        log_path.display()
    );

    let name = release.unwrap_or_else(|| format!("{} (did not boot)", kernel.series));
    let expected = kernel.attach.iter().map(|b| (*b, "attach")).chain(kernel.refused.iter().map(|b| (*b, "refused")));
    Ok(expected
        .map(|(backend, expected)| {
            let found = results.iter().find(|r| r.backend == backend && r.expected == expected);
            let (outcome, passed) = match found {
                Some(r) if r.rc == Some(0) => (format!("pass ({} s)", r.seconds), true),
                Some(r) => (format!("FAIL (exit {:?}, {} s)", r.rc, r.seconds), false),
                None if timed_out => (format!("FAIL (no result within {} s)", BOOT_TIMEOUT.as_secs()), false),
                None => ("FAIL (no result: the VM stopped first)".to_string(), false),
            };
            Row { kernel: name.clone(), backend: backend.to_string(), expected, outcome, passed }
        })
        .collect())
}

/// A `CW-RESULT` line's fields.
struct Reported {
    backend: String,
    expected: String,
    rc: Option<i32>,
    seconds: String,
}

fn fields(line: &str) -> Reported {
    let get = |key: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .unwrap_or("")
            .to_string()
    };
    Reported { backend: get("backend"), expected: get("expected"), rc: get("rc").parse().ok(), seconds: get("seconds") }
}

fn print_table(rows: &[Row]) {
    let width = rows.iter().map(|r| r.kernel.len()).max().unwrap_or(6).max(6);
    let mut table = format!("\n{:width$}  {:10}  {:8}  result\n", "kernel", "backend", "expected");
    for row in rows {
        let _ = writeln!(table, "{:width$}  {:10}  {:8}  {}", row.kernel, row.backend, row.expected, row.outcome);
    }
    println!("{table}");
}
