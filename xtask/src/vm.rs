//! `cargo xtask vm-test`: capwatch's real-kernel suite on the kernels its users run. Each kernel
//! is Debian's own cloud build, fetched with apt through a private configuration (its own sources
//! list, state and cache; the machine's apt setup stays as it is) and booted once under qemu's
//! software emulation from an initramfs that holds busybox and static builds of the suite,
//! `capwatch` and `cw-workload`. Inside, the whole suite runs once per backend the kernel offers,
//! the refused backends must each be refused in one clear line, and a kernel capwatch cannot run
//! on must be refused in one line naming what it lacks. The kernel × backend table is printed
//! at the end; any miss fails the task.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader, Write as _},
    os::unix::fs::{symlink, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{mpsc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{apt::apt, statics};

/// A kernel to boot, and what capwatch must find there.
struct Kernel {
    /// The Debian release whose kernel it is.
    name: &'static str,
    /// The Debian suites whose `linux-image-cloud-amd64` is this kernel: a release and, where it
    /// has them, its security updates (the newer wins). `-security` suites come from the machine's
    /// security archive, the others from its main archive.
    suites: &'static [&'static str],
    /// Backends this kernel must refuse, each in one clear line; every other one must attach and
    /// pass the whole suite.
    refused: &'static [&'static str],
    /// Set when capwatch must refuse this kernel outright: what its one line must name.
    unsupported: Option<&'static str>,
    /// The security/commoncap.c callers into which this build's compiler inlined `cap_capable`,
    /// so that fexit and kprobes on `cap_capable` cannot see their checks and capwatch's
    /// self-test must hook the callers themselves (measured by booting the build: without those
    /// hooks, fexit and kprobes saw none of mmap's CAP_SYS_ADMIN, capset's CAP_SETPCAP or a low
    /// mapping's CAP_SYS_RAWIO).
    inlined: &'static [&'static str],
}

/// The cloud kernels of Debian 11, 12 and 13, and the newest Debian ships (unstable).
const KERNELS: [Kernel; 4] = [
    // No bpf_get_current_task_btf (5.11) nor bpf_task_pt_regs (5.15); its tracing programs
    // cannot call bpf_get_current_ancestor_cgroup_id either.
    Kernel {
        name: "Debian 11",
        suites: &["bullseye", "bullseye-security"],
        refused: &[],
        unsupported: Some("bpf_task_pt_regs"),
        inlined: &[],
    },
    // Both have kprobes and BPF trampolines, and no capability tracepoint (6.14+).
    Kernel {
        name: "Debian 12",
        suites: &["bookworm", "bookworm-security"],
        refused: &["tracepoint"],
        unsupported: None,
        inlined: &["cap_vm_enough_memory", "cap_capset", "cap_mmap_addr"],
    },
    Kernel {
        name: "Debian 13",
        suites: &["trixie", "trixie-security"],
        refused: &["tracepoint"],
        unsupported: None,
        inlined: &["cap_vm_enough_memory", "cap_capset", "cap_mmap_addr"],
    },
    // Every backend.
    Kernel { name: "Debian unstable", suites: &["sid"], refused: &[], unsupported: None, inlined: &[] },
];

/// Every backend, in capwatch's order of preference.
const BACKENDS: [&str; 3] = ["fexit", "tracepoint", "kprobe"];

/// The suite's test files, each a static test executable in the initramfs; a backend's run is one
/// run of each.
const SUITES: [&str; 3] = ["kernel", "cli", "backends"];

/// Where kernels, the initramfs and the consoles' logs go.
const WORK_DIR: &str = "target/vm";

/// One run of one test executable inside a VM, killed past this (busybox `timeout`): a hung
/// test fails its backend and the VM goes on with the next.
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);

/// Loading a backend's programs through the verifier, before its suite: seconds under emulation
/// where the kernel takes them; a verifier that grinds towards its instruction limit fails the
/// backend here rather than in every test.
const LOAD_TIMEOUT: Duration = Duration::from_secs(180);

/// A VM whose console says nothing for this long is stopped: its kernel is locked up, where not
/// even `timeout` runs. Every test prints its result line well within it.
const SILENCE: Duration = Duration::from_secs(660);

/// A whole boot: the kernel's start, then every load's and every run's bound.
fn boot_timeout(loads: usize, runs: usize) -> Duration {
    Duration::from_secs(120) + LOAD_TIMEOUT * loads as u32 + SUITE_TIMEOUT * runs as u32
}

/// The VM's memory: the initramfs unpacks into it, and each test executable parses the kernel's
/// BTF (tens of MiB) as the daemon does.
const MEMORY_MIB: &str = "3072";

pub fn run(root: &Path) -> Result<()> {
    if !running_as_root() {
        bail!("vm-test needs root: it installs qemu and makes /dev/console in the initramfs (sudo ./x test)");
    }
    let started = Instant::now();
    let work = root.join(WORK_DIR);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    ensure_qemu()?;
    let mirrors = Mirrors::of_this_machine()?;
    let kernels =
        KERNELS.iter().map(|k| fetch_kernel(k, &mirrors, &work).map(|image| (k, image))).collect::<Result<Vec<_>>>()?;
    let built = build(root)?;
    let initramfs = pack_initramfs(&built, &work)?;
    eprintln!("vm-test: kernels and initramfs ready after {:.0} s", started.elapsed().as_secs_f64());

    let rows = boot_all(&kernels, &initramfs, &work)?;
    print_table(&rows, started.elapsed());
    let failed = rows.iter().filter(|r| !r.passed).count();
    if failed > 0 {
        bail!("{failed} kernel × backend combination(s) failed; the consoles are in {}", work.display());
    }
    Ok(())
}

/// Boots every kernel, as many at once as the machine has cores, the longest first; the rows in
/// KERNELS' order. A VM's suites run one test at a time, so it keeps about one core busy (measured:
/// 46% of two cores while one VM ran the kernel suite); a second VM uses the core it leaves idle.
fn boot_all(kernels: &[(&Kernel, PathBuf)], initramfs: &Path, work: &Path) -> Result<Vec<Row>> {
    let mut queue: Vec<usize> = (0..kernels.len()).collect();
    // Popped from the end: the kernel with the most backends to run goes first.
    queue.sort_by_key(|&i| attached(kernels[i].0).len());
    let queue = Mutex::new(queue);
    let booted = Mutex::new(BTreeMap::new());
    let lanes = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(kernels.len());
    std::thread::scope(|scope| {
        for _ in 0..lanes {
            scope.spawn(|| loop {
                // Taken apart from the boot, so that the queue's lock is not held through it.
                let next = queue.lock().unwrap_or_else(PoisonError::into_inner).pop();
                let Some(i) = next else { break };
                let (kernel, image) = &kernels[i];
                let rows = boot(kernel, image, initramfs, work);
                booted.lock().unwrap_or_else(PoisonError::into_inner).insert(i, rows);
            });
        }
    });
    let mut rows = Vec::new();
    for (_, booted) in booted.into_inner().unwrap_or_else(PoisonError::into_inner) {
        rows.extend(booted?);
    }
    Ok(rows)
}

/// The backends a kernel must attach and pass the suite on.
fn attached(kernel: &Kernel) -> Vec<&'static str> {
    if kernel.unsupported.is_some() {
        Vec::new()
    } else {
        BACKENDS.iter().copied().filter(|b| !kernel.refused.contains(b)).collect()
    }
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

/// The Debian archives this machine's apt uses: its release's suite and its security suite.
struct Mirrors {
    archive: String,
    security: String,
}

impl Mirrors {
    /// Read from the machine's own apt sources, so that other suites come from the same places.
    fn of_this_machine() -> Result<Self> {
        let release = fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
        let codename = release
            .lines()
            .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
            .map(|c| c.trim_matches('"').to_string())
            .context("/etc/os-release names no VERSION_CODENAME")?;
        let out = Command::new("apt-get")
            .args(["indextargets", "--no-release-info", "--format", "$(REPO_URI) $(RELEASE)"])
            .output()
            .context("running apt-get indextargets")?;
        let targets = String::from_utf8_lossy(&out.stdout);
        let uri_of = |suite: &str| {
            targets.lines().find_map(|l| {
                let (uri, release) = l.split_once(' ')?;
                (release == suite).then(|| uri.trim_end_matches('/').to_string())
            })
        };
        let archive = uri_of(&codename);
        let security = uri_of(&format!("{codename}-security"));
        match (archive, security) {
            (Some(archive), Some(security)) => Ok(Self { archive, security }),
            _ => bail!(
                "this machine's apt sources name no {codename} and {codename}-security suites to fetch kernels from"
            ),
        }
    }

    fn of(&self, suite: &str) -> &str {
        if suite.ends_with("-security") {
            &self.security
        } else {
            &self.archive
        }
    }
}

/// An apt configuration of its own for fetching one kernel: its sources list, state, cache and
/// nothing of the machine's configuration (`APT_CONFIG` read first, then no parts directory).
struct PrivateApt {
    config: PathBuf,
}

impl PrivateApt {
    fn new(dir: &Path, suites: &[&str], mirrors: &Mirrors) -> Result<Self> {
        for sub in ["apt.conf.d", "sources.list.d", "preferences.d", "trusted.gpg.d", "state", "cache"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        let mut sources = String::new();
        for suite in suites {
            let _ = writeln!(sources, "deb [signed-by={keyring}] {} {suite} main", mirrors.of(suite));
        }
        fs::write(dir.join("sources.list"), sources)?;
        fs::write(dir.join("status"), "")?;
        let path = |p: &str| dir.join(p).display().to_string();
        let config = format!(
            r#"Dir::Etc::Main "/dev/null";
Dir::Etc::Parts "{parts}";
Dir::Etc::SourceList "{sources}";
Dir::Etc::SourceParts "{source_parts}";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "{preferences}";
Dir::Etc::TrustedParts "{trusted}";
Dir::State "{state}";
Dir::State::status "{status}";
Dir::Cache "{cache}";
APT::Architecture "amd64";
APT::Architectures {{ "amd64"; }};
Acquire::Languages "none";
// The archives may be served as of a date: their Release files' Valid-Until can have passed.
Acquire::Check-Valid-Until "false";
"#,
            parts = path("apt.conf.d"),
            sources = path("sources.list"),
            source_parts = path("sources.list.d"),
            preferences = path("preferences.d"),
            trusted = path("trusted.gpg.d"),
            state = path("state"),
            status = path("status"),
            cache = path("cache"),
        );
        let config_path = dir.join("apt.conf");
        fs::write(&config_path, config)?;
        Ok(Self { config: config_path })
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("APT_CONFIG", &self.config).env("DEBIAN_FRONTEND", "noninteractive");
        command
    }

    fn update(&self) -> Result<()> {
        let status = self.command("apt-get").args(["update", "-qq"]).stdout(Stdio::null()).status()?;
        if !status.success() {
            bail!("apt-get update with {} failed ({status})", self.config.display());
        }
        Ok(())
    }

    /// The candidate version's `Depends:` of `package`, names only.
    fn depends(&self, package: &str) -> Result<Vec<String>> {
        let out = self.command("apt-cache").args(["show", "--no-all-versions", package]).output()?;
        if !out.status.success() {
            bail!("apt-cache show {package}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let depends = text.lines().find_map(|l| l.strip_prefix("Depends:")).unwrap_or("");
        Ok(depends.split([',', '|']).filter_map(|d| d.split_whitespace().next()).map(str::to_string).collect())
    }

    fn download(&self, package: &str, into: &Path) -> Result<PathBuf> {
        // apt's download sandbox user must be able to write here.
        fs::create_dir_all(into)?;
        fs::set_permissions(into, fs::Permissions::from_mode(0o777))?;
        let status = self
            .command("apt-get")
            .args(["download", "-qq", package])
            .current_dir(into)
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("apt-get download {package} failed ({status})");
        }
        let prefix = format!("{package}_");
        fs::read_dir(into)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            })
            .with_context(|| format!("apt-get download left no .deb for {package}"))
    }
}

/// The newest cloud kernel of the kernel's suites, downloaded and unpacked once; returns its
/// vmlinuz.
fn fetch_kernel(kernel: &Kernel, mirrors: &Mirrors, work: &Path) -> Result<PathBuf> {
    let apt = PrivateApt::new(&work.join("apt").join(kernel.suites[0]), kernel.suites, mirrors)?;
    apt.update()?;
    let image =
        apt.depends("linux-image-cloud-amd64")?.into_iter().find(|d| d.starts_with("linux-image-")).with_context(
            || format!("linux-image-cloud-amd64 of {} depends on no linux-image-*", kernel.suites.join(", ")),
        )?;
    let dir = work.join("kernels").join(&image);
    if let Some(vmlinuz) = find_vmlinuz(&dir) {
        return Ok(vmlinuz);
    }
    eprintln!("vm-test: downloading {image}");
    let downloads = work.join("downloads");
    let mut debs = vec![apt.download(&image, &downloads)?];
    // Since Debian 14 the image package only depends on the kernel binary's own package.
    for binary in apt.depends(&image)?.into_iter().filter(|d| d.starts_with("linux-binary-")) {
        debs.push(apt.download(&binary, &downloads)?);
    }
    let unpacking = dir.with_extension("partial");
    let _ = fs::remove_dir_all(&unpacking);
    fs::create_dir_all(&unpacking)?;
    for deb in &debs {
        let status = Command::new("dpkg-deb").arg("-x").arg(deb).arg(&unpacking).status()?;
        if !status.success() {
            bail!("dpkg-deb -x {} failed ({status})", deb.display());
        }
        fs::remove_file(deb)?;
    }
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&unpacking, &dir)?;
    find_vmlinuz(&dir).with_context(|| format!("{image} holds no vmlinuz"))
}

/// `boot/vmlinuz-*` (Debian up to 13) or `usr/lib/modules/*/vmlinuz` (since).
fn find_vmlinuz(dir: &Path) -> Option<PathBuf> {
    let named =
        |p: &Path| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n == "vmlinuz" || n.starts_with("vmlinuz-"));
    let files = |d: PathBuf| fs::read_dir(d).into_iter().flatten().filter_map(|e| e.ok().map(|e| e.path()));
    files(dir.join("boot")).chain(files(dir.join("usr/lib/modules")).flat_map(files)).find(|p| named(p) && p.is_file())
}

/// The static programs that go into the VM.
struct Built {
    suites: Vec<(&'static str, PathBuf)>,
    capwatch: PathBuf,
    workload: PathBuf,
}

/// Static builds, once for every kernel: the VM has no C library. The test executables find
/// `capwatch` and `cw-workload` one directory above their own, as in cargo's layout. Paths come
/// from cargo's own report, so a `CARGO_TARGET_DIR` is honoured.
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
    let mut args = vec!["test", "--release", "--no-run", "--package", "capwatch-tests"];
    for suite in SUITES {
        args.extend(["--test", suite]);
    }
    let tests = executables(root, &args)?;
    let find = |found: &[(String, PathBuf)], name: &str| {
        found.iter().find(|(n, _)| n == name).map(|(_, p)| p.clone()).with_context(|| format!("cargo built no {name}"))
    };
    Ok(Built {
        suites: SUITES.iter().map(|s| find(&tests, s).map(|p| (*s, p))).collect::<Result<_>>()?,
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

/// Runs inside the VM as pid 1. The kernel hands `cw_*=` of its command line to init as
/// environment variables: `cw_attach` the backends to run the suite on, `cw_refused` those the
/// kernel must refuse, `cw_unsupported` what capwatch must name when it refuses the kernel
/// outright, `cw_inlined` the callers whose checks fexit and kprobes cannot see, `cw_timeout` the
/// bound of one test executable's run and `cw_load_timeout` that of loading a backend's programs,
/// in seconds.
const INIT: &str = r#"#!/bin/sh
export PATH=/bin HOME=/ CI=true CAPWATCH_TEST_EMULATED=1
export CAPWATCH_TEST_REFUSED="$cw_refused" CAPWATCH_TEST_INLINED="$cw_inlined"
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo "CW-KERNEL $(uname -r)"
# run NAME SUITE [ARGS...]: one test executable, bounded, and its exit status. One test at a
# time: under emulation, one test's programs attaching to cap_capable while another's workers
# hammer it on both CPUs has locked 6.1 up.
run() {
    name=$1 suite=$2
    shift 2
    timeout "$cw_timeout" /cw/release/deps/"$suite" --test-threads=1 "$@"
    echo "CW-RAN run=$name suite=$suite rc=$?"
}
# The tests about the kernel's set of backends (auto, the refused ones) run once, apart.
per_kernel="auto_attaches_the_most_truthful_backend_and_says_why_the_others_were_refused a_forced_backend_the_kernel_refuses_is_one_clear_line"
# Each backend's programs must load first: where the verifier refuses them, or takes minutes
# over them, the suite would only wait for a capwatch that never starts.
loaded=
for backend in $(echo "$cw_attach" | tr , ' '); do
    start=$(date +%s)
    echo "CW-BEGIN run=$backend"
    if CAPWATCH_TEST_PROBE=$backend timeout "$cw_load_timeout" /cw/release/deps/backends --test-threads=1 \
        --exact the_programs_pass_this_kernels_verifier; then
        loaded=yes
        for suite in kernel cli; do
            CAPWATCH_TEST_PROBE=$backend run "$backend" "$suite"
        done
        CAPWATCH_TEST_PROBE=$backend run "$backend" backends $(for t in $per_kernel; do echo --skip "$t"; done)
    else
        echo "CW-RAN run=$backend suite=loading rc=$?"
    fi
    echo "CW-END run=$backend seconds=$(( $(date +%s) - start ))"
done
if [ -n "$loaded" ]; then
    start=$(date +%s)
    echo "CW-BEGIN run=per-kernel"
    run per-kernel backends --nocapture --exact $per_kernel
    echo "CW-END run=per-kernel seconds=$(( $(date +%s) - start ))"
fi
if [ -n "$cw_unsupported" ]; then
    start=$(date +%s)
    echo "CW-BEGIN run=unsupported"
    CAPWATCH_TEST_UNSUPPORTED="$cw_unsupported" run unsupported backends --nocapture --exact a_kernel_capwatch_cannot_run_on_is_one_line_naming_what_it_lacks
    echo "CW-END run=unsupported seconds=$(( $(date +%s) - start ))"
fi
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
    for (suite, path) in &built.suites {
        fs::copy(path, dir.join("cw/release/deps").join(suite))?;
    }
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

/// One line of the table.
struct Row {
    kernel: String,
    backend: String,
    expected: &'static str,
    outcome: String,
    passed: bool,
}

/// What one run (`CW-BEGIN` … `CW-END`) inside a VM reported.
#[derive(Default)]
struct Run {
    /// Each test executable's exit status.
    exits: Vec<(String, Option<i32>)>,
    passed: u32,
    failed: u32,
    seconds: Option<u64>,
    /// What capwatch said when it refused, by whom it was asked (the tests' `WHO refused as
    /// expected: LINE` lines).
    refusals: Vec<(String, String)>,
    /// What `auto` attached (the test's `auto attached BACKEND` line).
    auto: Option<String>,
}

impl Run {
    fn ok(&self, executables: usize) -> bool {
        self.exits.len() == executables
            && self.exits.iter().all(|(_, rc)| *rc == Some(0))
            && self.passed > 0
            && self.failed == 0
    }

    fn summary(&self) -> String {
        let failing: Vec<String> = self
            .exits
            .iter()
            .filter(|(_, rc)| *rc != Some(0))
            .map(|(suite, rc)| format!("{suite} exit {rc:?}"))
            .collect();
        let seconds = self.seconds.map_or("unfinished".to_string(), |s| format!("{s} s"));
        let mut text = format!("{} passed, {} failed, {seconds}", self.passed, self.failed);
        if !failing.is_empty() {
            let _ = write!(text, "; {}", failing.join(", "));
        }
        text
    }
}

/// Boots one kernel, streams its console into a log, and reads the runs' reports.
fn boot(kernel: &Kernel, vmlinuz: &Path, initramfs: &Path, work: &Path) -> Result<Vec<Row>> {
    let attach = attached(kernel);
    let runs =
        attach.len() * SUITES.len() + usize::from(!attach.is_empty()) + usize::from(kernel.unsupported.is_some());
    let log_path = work.join(format!("console-{}.log", kernel.suites[0]));
    let mut log = fs::File::create(&log_path)?;
    let append = format!(
        "console=ttyS0 panic=-1 quiet cw_attach={} cw_refused={} cw_unsupported={} cw_inlined={} cw_timeout={} cw_load_timeout={}",
        attach.join(","),
        kernel.refused.join(","),
        kernel.unsupported.unwrap_or(""),
        kernel.inlined.join(","),
        SUITE_TIMEOUT.as_secs(),
        LOAD_TIMEOUT.as_secs()
    );
    eprintln!("vm-test: booting {} ({})", kernel.name, vmlinuz.display());
    let started = Instant::now();
    // Below the other work on the machine: two cores are shared.
    let mut qemu = Command::new("nice")
        .args(["-n", "10", "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", MEMORY_MIB, "-smp", "2"])
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
    let mut reports: BTreeMap<String, Run> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut done = false;
    let timeout = boot_timeout(attach.len(), runs);
    let deadline = started + timeout;
    // Why the VM was stopped before it finished, if it was.
    let mut stopped = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match lines.recv_timeout(left.min(SILENCE)) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) if left <= SILENCE => {
                stopped = Some(format!("no result within {} s", timeout.as_secs()));
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                stopped = Some(format!("the console was silent for {} s", SILENCE.as_secs()));
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let line = line.trim_end_matches('\r').to_string();
        writeln!(log, "{line}")?;
        // The firmware's terminal escapes can precede the first line of init.
        let after = |marker: &str| line.find(marker).map(|at| line[at + marker.len()..].trim().to_string());
        if let Some(rest) = after("CW-KERNEL ") {
            release = Some(rest);
        } else if let Some(rest) = after("CW-BEGIN ") {
            let name = field(&rest, "run");
            eprintln!("vm-test: {}: {name}", kernel.name);
            reports.entry(name.clone()).or_default();
            current = Some(name);
        } else if let Some(rest) = after("CW-RAN ") {
            if let Some(run) = current.as_ref().and_then(|c| reports.get_mut(c)) {
                run.exits.push((field(&rest, "suite"), field(&rest, "rc").parse().ok()));
            }
        } else if let Some(rest) = after("CW-END ") {
            if let Some(run) = reports.get_mut(&field(&rest, "run")) {
                run.seconds = field(&rest, "seconds").parse().ok();
                eprintln!("vm-test: {}: {}", kernel.name, run.summary());
            }
            current = None;
        } else if after("CW-DONE").is_some() {
            done = true;
        } else if let Some(run) = current.as_ref().and_then(|c| reports.get_mut(c)) {
            // libtest's closing line: "test result: ok. 12 passed; 0 failed; …".
            if let Some(rest) = after("test result: ") {
                let count = |what: &str| {
                    rest.split(';')
                        .find_map(|part| {
                            part.trim().trim_start_matches(|c: char| !c.is_ascii_digit()).strip_suffix(what)
                        })
                        .and_then(|n| n.trim().parse::<u32>().ok())
                        .unwrap_or(0)
                };
                run.passed += count("passed");
                run.failed += count("failed");
            } else if let Some((who, said)) = line.split_once("refused as expected: ") {
                run.refusals.push((who.trim().to_string(), said.trim().to_string()));
            } else if let Some(backend) = after("auto attached ") {
                run.auto = Some(backend);
            }
        }
    }
    if stopped.is_some() {
        let _ = qemu.kill();
    }
    let _ = qemu.wait();
    eprintln!(
        "vm-test: {} finished in {:.0} s; console in {}",
        kernel.name,
        started.elapsed().as_secs_f64(),
        log_path.display()
    );

    let name = match release {
        Some(release) => format!("{release} ({})", kernel.name),
        None => format!("{} (did not boot)", kernel.name),
    };
    let missing = || match (&stopped, done) {
        (Some(why), _) => format!("FAIL ({why})"),
        (None, true) => "FAIL (no result)".to_string(),
        (None, false) => "FAIL (no result: the VM stopped first)".to_string(),
    };
    let mut rows = Vec::new();
    let mut row = |backend: &str, expected: &'static str, outcome: String, passed: bool| {
        rows.push(Row { kernel: name.clone(), backend: backend.to_string(), expected, outcome, passed });
    };
    for backend in &attach {
        match reports.get(*backend) {
            Some(run) if run.ok(SUITES.len()) => row(backend, "attach", format!("pass ({})", run.summary()), true),
            Some(run) => row(backend, "attach", format!("FAIL ({})", run.summary()), false),
            None => row(backend, "attach", missing(), false),
        }
    }
    // What capwatch said to `who` (a backend, or `--probe NAME`), as the tests printed it.
    let said = |run: &Run, who: &str| {
        // libtest may print the test's name first, on the same line.
        run.refusals.iter().find(|(asked, _)| asked.ends_with(who)).map(|(_, line)| line.clone()).unwrap_or_default()
    };
    let refusal = |run: Option<&Run>, who: &str| match run {
        Some(run) if run.ok(1) => (format!("pass: {}", said(run, who)), true),
        Some(run) => (format!("FAIL ({})", run.summary()), false),
        None => (missing(), false),
    };
    if !attach.is_empty() {
        let per_kernel = reports.get("per-kernel");
        let (outcome, passed) = match per_kernel {
            Some(run) if run.ok(1) => (format!("pass: attached {}", run.auto.as_deref().unwrap_or("?")), true),
            Some(run) => (format!("FAIL ({})", run.summary()), false),
            None => (missing(), false),
        };
        row("auto", "attach", outcome, passed);
        for backend in kernel.refused {
            let (outcome, passed) = refusal(per_kernel, backend);
            row(backend, "refused", outcome, passed);
        }
    }
    if kernel.unsupported.is_some() {
        let (outcome, passed) = refusal(reports.get("unsupported"), "--probe auto");
        row("every", "refused", outcome, passed);
    }
    Ok(rows)
}

/// `key=value` of a marker line; empty when absent.
fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or("")
        .to_string()
}

fn print_table(rows: &[Row], took: Duration) {
    let width = rows.iter().map(|r| r.kernel.len()).max().unwrap_or(6).max(6);
    let mut table = format!("\n{:width$}  {:10}  {:8}  result\n", "kernel", "backend", "expected");
    for row in rows {
        let _ = writeln!(table, "{:width$}  {:10}  {:8}  {}", row.kernel, row.backend, row.expected, row.outcome);
    }
    let _ = writeln!(table, "vm-test took {:.0} s", took.as_secs_f64());
    println!("{table}");
}
