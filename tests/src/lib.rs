//! What capwatch's kernel tests share: the gate that decides whether a test that needs root and
//! BPF runs (in CI it must), the capability backend a run tests and what that backend sees,
//! cgroups made for one test, and workloads started inside them with capabilities really dropped.

use std::{
    ffi::CString,
    fs,
    io::{self, BufRead, BufReader},
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc, OnceLock,
    },
    time::{Duration, Instant},
};

use capwatch::{
    cgroup::{Hierarchy, Scope},
    monitor::Monitor,
    probe::{self, Backend, Probe},
    selftest::{self, Sight},
};
use capwatch_common::flags_from_opts;
use serde_json::Value;

/// How long a test waits for the daemon to say something it expects: generous, since a loaded
/// two-core machine can take seconds to load the programs and attach.
pub const PATIENCE: Duration = Duration::from_secs(30);

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

/// The capability backend this run tests: `CAPWATCH_TEST_PROBE` (`fexit`, `tracepoint` or
/// `kprobe`; unset or `auto`: whichever capwatch's `auto` takes on this kernel). Every monitor a
/// test attaches and every `capwatch daemon` or `trace` it starts uses it, so one run of the suite
/// tests one backend; `cargo xtask vm-test` runs the suite once for each backend of each kernel.
pub fn test_probe() -> probe::Choice {
    static CHOICE: OnceLock<probe::Choice> = OnceLock::new();
    *CHOICE.get_or_init(|| match std::env::var("CAPWATCH_TEST_PROBE") {
        Ok(name) if !name.is_empty() => name.parse().unwrap_or_else(|e| panic!("CAPWATCH_TEST_PROBE: {e}")),
        _ => probe::Choice::default(),
    })
}

/// The backend the run's capwatch attaches: the one `CAPWATCH_TEST_PROBE` forces, or the one
/// `auto` takes here, found once by attaching capwatch's probe in this process.
pub fn test_backend() -> Backend {
    static BACKEND: OnceLock<Backend> = OnceLock::new();
    *BACKEND.get_or_init(|| {
        test_probe().backend().unwrap_or_else(|| {
            let cgroup = TestCgroup::new("auto");
            let probe = Probe::start(probe::Options {
                scope: cgroup.scope(),
                backend: None,
                maps: Default::default(),
                syscall_sets: true,
                reads: probe::Reads::Casts,
            })
            .unwrap_or_else(|e| panic!("no capability backend attaches on this kernel: {e}"));
            probe.backend()
        })
    })
}

/// Whether `backend` sees `cap_capable`'s `opts`: fexit and the kprobe do, as arguments; the
/// tracepoint reports the verdict but has no `opts`.
pub fn sees_opts(backend: Backend) -> bool {
    matches!(backend, Backend::Fexit | Backend::Kprobe)
}

/// The `CapKey::flags` bits that say what `opts` a check was made with (`CAP_OPT_NOAUDIT`,
/// `CAP_OPT_INSETID`), as `backend` records them: where it sees `opts`, `CAP_FLAG_OPTS_KNOWN` and
/// the NOAUDIT and INSETID bits as they were; on the tracepoint none of the three. The bits the
/// credentials decide (`CAP_FLAG_FOREIGN_CRED`, `CAP_FLAG_OUTER_USERNS`) are every backend's.
pub fn opts_flags(backend: Backend, opts: u32) -> u32 {
    if sees_opts(backend) {
        flags_from_opts(opts)
    } else {
        0
    }
}

/// Whether the checks that `caller`, a security/commoncap.c function calling `cap_capable`
/// directly (`cap_vm_enough_memory`, `cap_capset`, `cap_mmap_addr`, …), makes reach `backend`.
/// The tracepoint fires inside `cap_capable`'s body, so it sees them all. fexit and kprobes hook
/// the function's entry and return, which a call the compiler inlined never passes: where a
/// kernel's build inlined `cap_capable` into `caller`, they cannot see its checks. Which callers
/// a build inlined is a fact of that build, not of its version: `CAPWATCH_TEST_INLINED` lists
/// them (`cargo xtask vm-test` knows them for each kernel it boots; set and empty: none). None
/// when it is unknown.
pub fn reaches(backend: Backend, caller: &str) -> Option<bool> {
    if backend == Backend::Tracepoint {
        return Some(true);
    }
    let inlined = std::env::var("CAPWATCH_TEST_INLINED").ok()?;
    Some(!inlined.split(',').any(|name| name.trim() == caller))
}

/// Whether the tests run under software emulation (`cargo xtask vm-test` sets
/// `CAPWATCH_TEST_EMULATED`), some twenty times slower than the machine itself.
pub fn emulated() -> bool {
    std::env::var_os("CAPWATCH_TEST_EMULATED").is_some()
}

/// How long to wait for what a test expects to happen: longer under software emulation, where
/// loading capwatch's programs alone takes seconds. Only a failing test waits that long.
pub fn patience(usual: Duration) -> Duration {
    if emulated() {
        usual * 8
    } else {
        usual
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

    /// A monitor with capwatch's real programs attached on the run's backend (`test_probe`),
    /// watching this cgroup's subtree, its sight proven as the daemon's is: where the kernel
    /// inlined `cap_capable` into a direct caller, a program on that caller is attached.
    /// `monitor.probe().backend()` says which backend attached.
    pub fn monitor(&self) -> Monitor {
        self.proven_monitor().0
    }

    /// `monitor`, and what its self-test found. Nothing of the self-test is left in the monitor.
    pub fn proven_monitor(&self) -> (Monitor, Sight) {
        self.proven_monitor_reading(probe::Reads::Casts)
    }

    /// `proven_monitor`, its programs reading the current task as `reads` says.
    pub fn proven_monitor_reading(&self, reads: probe::Reads) -> (Monitor, Sight) {
        let choice = test_probe();
        let options = probe::Options {
            scope: self.scope(),
            backend: choice.backend(),
            maps: Default::default(),
            syscall_sets: true,
            reads,
        };
        let hierarchy = Hierarchy::find().expect("cgroup2");
        let mut monitor = Monitor::start(options, hierarchy.clone())
            .unwrap_or_else(|e| panic!("attach capwatch's probe ({choice}): {e}"));
        let sight = selftest::run(&mut monitor, &hierarchy, Path::new(&self.name), &bin("capwatch"));
        let backend = monitor.probe().backend();
        assert!(sight.unproven.is_none(), "{backend}: the self-test could not run: {sight:#?}");
        assert!(
            monitor.aggregates().cgroups().is_empty(),
            "{backend}: the self-test left {:?}",
            monitor.aggregates().cgroups()
        );
        (monitor, sight)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // The processes a test started have exited; the kernel may take a moment to notice.
        for _ in 0..50 {
            match fs::remove_dir(&self.dir) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(Duration::from_millis(20));
                }
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
    dies_with_parent: bool,
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

    /// The program gets SIGTERM when the thread that started it ends (the kernel's parent-death
    /// signal): a process shared by several tests, started from a thread that lives as long as
    /// the test executable, ends with it.
    pub fn dying_with_parent(mut self) -> Self {
        self.dies_with_parent = true;
        self
    }

    /// Prepares `command` to start under this launch's conditions.
    pub fn apply(&self, command: &mut Command) {
        let procs = self
            .cgroup
            .as_ref()
            .map(|dir| CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).expect("path"));
        let drop: Vec<libc::c_ulong> = self.drop.iter().map(|c| libc::c_ulong::from(c.index())).collect();
        let uid = self.uid;
        let runtime = self.runtime;
        let dies_with_parent = self.dies_with_parent;
        // SAFETY: between fork and exec the closure makes only raw syscalls on memory prepared
        // before the fork.
        unsafe {
            command.pre_exec(move || {
                if dies_with_parent && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(procs) = &procs {
                    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                    if fd < 0 || libc::write(fd, b"0\n".as_ptr().cast(), 2) != 2 {
                        return Err(io::Error::last_os_error());
                    }
                    libc::close(fd);
                }
                if runtime
                    && (libc::prctl(libc::PR_SET_NAME, c"runc:[2:INIT]".as_ptr(), 0, 0, 0) != 0 || libc::setuid(0) != 0)
                {
                    return Err(io::Error::last_os_error());
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

/// A running capwatch whose stdout lines arrive on a channel.
pub struct Running {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    errors: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    /// A daemon's lines are checked against the log schema as they arrive.
    daemon: bool,
}

/// Forwards a pipe's lines to a channel.
fn lines_of(pipe: impl io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Running {
    pub fn start(args: &[&str]) -> Self {
        Self::start_with(args, &[])
    }

    /// The same with environment variables. A daemon gets an ephemeral metrics port and no
    /// config file unless told otherwise, so that tests' daemons run side by side and a host's
    /// /etc/capwatch/config.toml changes nothing.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_as(&Launch::default(), args, env)
    }

    /// The same, started under `launch`'s conditions (its cgroup, its bounding set). A daemon or a
    /// trace attaches the run's backend (`test_probe`) unless `args` name one.
    pub fn start_as(launch: &Launch, args: &[&str], env: &[(&str, &str)]) -> Self {
        let daemon = args.first() == Some(&"daemon");
        let mut command = Command::new(bin("capwatch"));
        launch.apply(&mut command);
        if daemon {
            command.env("CAPWATCH_METRICS_LISTEN", "127.0.0.1:0").env("CAPWATCH_CONFIG", "/dev/null");
        }
        command.args(args);
        if (daemon || args.first() == Some(&"trace")) && !args.contains(&"--probe") {
            command.arg("--probe").arg(test_probe().to_string());
        }
        let mut child = command
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start capwatch");
        let lines = lines_of(child.stdout.take().expect("stdout"));
        let errors = lines_of(child.stderr.take().expect("stderr"));
        Self { child, lines, errors, seen: Vec::new(), daemon }
    }

    /// Waits (up to `PATIENCE`, longer under emulation) for the first line on stderr.
    pub fn first_stderr_line(&mut self) -> String {
        self.errors.recv_timeout(patience(PATIENCE)).expect("a line on stderr")
    }

    /// Waits (up to `PATIENCE`, longer under emulation) for a line that satisfies `wanted`.
    pub fn wait_for(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        self.wait_up_to(PATIENCE, what, wanted)
    }

    /// Waits for the daemon's `started` line and returns it: loading and attaching the programs
    /// takes seconds on a busy machine, so it gets a minute (`patience`).
    pub fn wait_for_start(&mut self) -> Value {
        json(&self.wait_up_to(2 * PATIENCE, "event=started", |l| json(l)["event"] == "started"))
    }

    fn wait_up_to(&mut self, usual: Duration, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + patience(usual);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if self.daemon {
                        check_line(&line);
                    }
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("no line with {what}; {}", self.said());
    }

    /// What it has printed so far, and whether it is still running: for a failing test's message.
    pub fn said(&mut self) -> String {
        let rest: Vec<String> = self.lines.try_iter().collect();
        self.seen.extend(rest);
        let stderr: Vec<String> = self.errors.try_iter().collect();
        let status = match self.child.try_wait() {
            Ok(Some(status)) => format!("exited ({status})"),
            _ => "running".to_string(),
        };
        format!("capwatch {status}; stdout so far:\n{}\nstderr:\n{}", self.seen.join("\n"), stderr.join("\n"))
    }

    /// Sends `signal`, waits for the exit, returns the exit code and the remaining lines.
    pub fn stop(mut self, signal: i32) -> (Option<i32>, Vec<String>) {
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let status = self.child.wait().expect("wait");
        let rest: Vec<String> = self.lines.iter().collect();
        if self.daemon {
            rest.iter().for_each(|line| drop(check_line(line)));
        }
        self.seen.extend(rest);
        (status.code(), std::mem::take(&mut self.seen))
    }
}

/// A test that fails midway leaves no capwatch running (it would hold the test's pipes open).
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A child process killed when the test ends, however it ends.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// docs/log-schema.json, compiled once. Built in, so that the tests run where the source tree is
/// not (the VMs of `cargo xtask vm-test`).
fn log_schema() -> &'static jsonschema::Validator {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let text = include_str!("../../docs/log-schema.json");
        let schema: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("docs/log-schema.json: {e}"));
        jsonschema::validator_for(&schema)
            .unwrap_or_else(|e| panic!("docs/log-schema.json: not a valid JSON Schema: {e}"))
    })
}

/// A daemon line as JSON, checked against the log schema; a line that breaks it fails the test.
pub fn check_line(line: &str) -> Value {
    let value = json(line);
    let errors: Vec<String> =
        log_schema().iter_errors(&value).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "a daemon line breaks docs/log-schema.json: {}\n{line}", errors.join("; "));
    value
}

/// A line as JSON; a line that is not JSON fails the test.
pub fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
}

/// A fresh directory under the temporary directory.
pub fn tempdir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("capwatch-test-{}-{label}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// A program the test needs, from PATH (or the sbin directories). Outside CI a test without it
/// says so and skips; in CI it fails (`./x test` installs every one).
pub fn tool_available(test: &str, program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin"])
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| candidate.is_file());
    match found {
        Some(path) => Some(path),
        None if in_ci() => panic!("{test}: cannot run in CI: {program} is not installed (./x test installs it)"),
        None => {
            eprintln!("SKIPPED {test}: {program} is not installed (./x test installs it)");
            None
        }
    }
}

/// The tests' own Docker engine, which `cargo xtask test` starts, and the image it imported.
pub struct DockerEnv {
    pub socket: String,
    pub image: String,
}

/// The Docker engine for a test, if there is one. In CI there must be; elsewhere a test without
/// one says so and skips.
pub fn docker_available(test: &str) -> Option<DockerEnv> {
    if !kernel_available(test) {
        return None;
    }
    match (std::env::var("CAPWATCH_TEST_DOCKER_SOCKET"), std::env::var("CAPWATCH_TEST_IMAGE")) {
        (Ok(socket), Ok(image)) if Path::new(&socket).exists() => Some(DockerEnv { socket, image }),
        _ if in_ci() => panic!("{test}: cannot run in CI: no Docker engine (run the tests with `cargo xtask test`)"),
        _ => {
            eprintln!("SKIPPED {test}: no Docker engine (`cargo xtask test` starts one)");
            None
        }
    }
}

impl DockerEnv {
    /// Runs `docker ARGS` against the test engine and returns what it printed; fails the test if
    /// docker itself fails.
    pub fn docker(&self, args: &[&str]) -> String {
        let out = self.try_docker(args);
        assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn try_docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("--host")
            .arg(format!("unix://{}", self.socket))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("docker {args:?}: {e}"))
    }

    /// `docker run --detach --network none OPTIONS IMAGE COMMAND`, returning the full id.
    pub fn start(&self, options: &[&str], command: &[&str]) -> String {
        let mut args = vec!["run", "--detach", "--network", "none"];
        args.extend_from_slice(options);
        args.push(&self.image);
        args.extend_from_slice(command);
        self.docker(&args)
    }

    /// Waits for a container to exit and returns its exit code.
    pub fn wait(&self, id: &str) -> i32 {
        self.docker(&["wait", id]).parse().expect("exit code")
    }

    /// `capwatch daemon` following this engine, writing its store in `state`.
    pub fn daemon(&self, state: &Path) -> Running {
        let mut daemon = Running::start(&[
            "daemon",
            "--state-dir",
            state.to_str().expect("utf-8 path"),
            "--docker-socket",
            &self.socket,
        ]);
        daemon.wait_for("event=docker_connected", |l| json(l)["event"] == "docker_connected");
        daemon
    }
}

/// A unique container name for a test.
pub fn container_name(label: &str) -> String {
    static SERIAL: AtomicU32 = AtomicU32::new(0);
    format!("cw-{label}-{}-{}", std::process::id(), SERIAL.fetch_add(1, Ordering::Relaxed))
}

/// `capwatch ARGS` run to completion: (exit code, stdout, stderr).
pub fn capwatch(args: &[&str]) -> (Option<i32>, String, String) {
    // Full-width tables, whatever the terminal the tests were started from.
    let out = Command::new(bin("capwatch")).args(args).env_remove("COLUMNS").output().expect("run capwatch");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits until the store in `state` records the container's exit, and returns its report as
/// JSON. The exit is written in the same transaction as everything the container did before it.
pub fn wait_stored(state: &Path, container: &str) -> Value {
    let state_dir = state.to_str().expect("utf-8 path");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out, _) = capwatch(&["report", container, "--format", "json", "--state-dir", state_dir]);
        if code == Some(0) {
            let report: Value = serde_json::from_str(&out).expect("report JSON");
            if report["container"]["exited_at"].is_string() {
                return report;
            }
        }
        assert!(Instant::now() < deadline, "the store never recorded {container}'s exit");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Whether `actual` reads as `expected` says, line by line: `[..]` in a line stands for any text,
/// a line `...` for any number of lines, and trailing spaces do not count.
pub fn matches_snapshot(expected: &str, actual: &str) -> bool {
    fn line_matches(pattern: &str, line: &str) -> bool {
        let mut parts = pattern.split("[..]");
        let first = parts.next().unwrap_or_default();
        let Some(mut rest) = line.strip_prefix(first) else { return false };
        let parts: Vec<&str> = parts.collect();
        for (i, part) in parts.iter().enumerate() {
            if i == parts.len() - 1 {
                return rest.ends_with(part);
            }
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.is_empty()
    }
    fn lines_match(expected: &[&str], actual: &[&str]) -> bool {
        match expected.split_first() {
            None => actual.is_empty(),
            Some((&"...", rest)) => (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..])),
            Some((pattern, rest)) => actual
                .split_first()
                .is_some_and(|(line, after)| line_matches(pattern, line) && lines_match(rest, after)),
        }
    }
    let trimmed = |text: &str| text.lines().map(str::trim_end).collect::<Vec<_>>().join("\n");
    let (expected, actual) = (trimmed(expected), trimmed(actual));
    lines_match(&expected.lines().collect::<Vec<_>>(), &actual.lines().collect::<Vec<_>>())
}

/// Compares `actual` with `tests/snapshots/NAME.txt` (see `matches_snapshot`);
/// `CAPWATCH_BLESS=1` writes the file from `actual` instead, for a person to mask what varies.
pub fn assert_snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots").join(format!("{name}.txt"));
    if std::env::var("CAPWATCH_BLESS").is_ok_and(|v| v == "1") {
        fs::create_dir_all(path.parent().expect("snapshots dir")).expect("snapshots dir");
        fs::write(&path, actual).expect("write snapshot");
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        matches_snapshot(&expected, actual),
        "{name} no longer reads as {} says:\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

/// `capwatch ARGS` as a person runs it in a terminal `columns` wide (without one, colour is off
/// and the width is the terminal's, which tests do not have): (exit code, stdout, stderr).
pub fn capwatch_at(columns: u16, env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin("capwatch"))
        .args(args)
        .env("COLUMNS", columns.to_string())
        .envs(env.iter().copied())
        .output()
        .expect("run capwatch");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::matches_snapshot;

    #[test]
    fn snapshots_mask_what_varies() {
        assert!(matches_snapshot("id [..] exited [..]\nend\n", "id abc exited 2026\nend"));
        assert!(matches_snapshot("a\n...\nz", "a\nb\nc\nz"));
        assert!(matches_snapshot("a\n...\nz", "a\nz"));
        assert!(matches_snapshot("[..]x[..]y", "1x2y"));
        assert!(!matches_snapshot("a[..]b", "a c"));
        assert!(!matches_snapshot("a\nb", "a"));
        assert!(!matches_snapshot("exact", "exact but more"));
    }
}
