//! Every capability backend (fexit, tracepoint, kprobe) against the real kernel: the same
//! scenarios, the same exact counts, the same syscall attribution; where `opts` is known, the
//! kernel's advisory checks are marked from it. These need root and BPF; in CI they must run.
//!
//! Which backends: `CAPWATCH_TEST_BACKEND` (comma-separated) names those that must attach;
//! `CAPWATCH_TEST_REFUSED` those that must be refused with a clear message. Without either, the
//! running kernel decides: what attaches is tested, what does not must say why. `cargo xtask
//! vm-test` sets both for each kernel it boots.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{mpsc, OnceLock},
    time::{Duration, Instant},
};

use caps::Capability::{self, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_NET_RAW, CAP_SETUID, CAP_SYS_ADMIN};
use capwatch::probe::{self, Backend, Probe};
use capwatch_common::{
    CapKey, FailKey, Moot, Totals, Verdict, CAP_FLAG_INSETID, CAP_FLAG_MOOT_SHIFT, CAP_FLAG_NOAUDIT,
    CAP_FLAG_OPTS_KNOWN,
};
use capwatch_tests::{bin, in_ci, kernel_available, refused, Launch, ProtectedFile, TestCgroup};
use serde_json::Value;

const SYS_SOCKET: u32 = libc::SYS_socket as u32;
const SYS_SETUID: u32 = libc::SYS_setuid as u32;
const SYS_OPENAT: u32 = libc::SYS_openat as u32;
const SYS_MMAP: u32 = libc::SYS_mmap as u32;

/// Which backends this run tests.
#[derive(Debug)]
struct Plan {
    /// Must attach; every scenario runs on each.
    attach: Vec<Backend>,
    /// Must be refused, with a reason.
    refused: Vec<Backend>,
}

fn plan() -> &'static Plan {
    static PLAN: OnceLock<Plan> = OnceLock::new();
    PLAN.get_or_init(|| {
        let listed = |var: &str| std::env::var(var).ok().map(|v| parse_backends(var, &v));
        match (listed("CAPWATCH_TEST_BACKEND"), listed("CAPWATCH_TEST_REFUSED")) {
            (None, None) => offered_here(),
            (attach, refused) => Plan { attach: attach.unwrap_or_default(), refused: refused.unwrap_or_default() },
        }
    })
}

fn parse_backends(var: &str, value: &str) -> Vec<Backend> {
    value
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            Backend::PREFERENCE
                .into_iter()
                .find(|b| b.name() == name)
                .unwrap_or_else(|| panic!("{var}: no backend named {name:?} (fexit, tracepoint, kprobe)"))
        })
        .collect()
}

/// What the running kernel lets attach. At least one must, or capwatch cannot run here.
fn offered_here() -> Plan {
    let cgroup = TestCgroup::new("offered");
    let (mut attach, mut refused) = (Vec::new(), Vec::new());
    for backend in Backend::PREFERENCE {
        match Probe::start(probe::Options { scope: cgroup.scope(), backend: Some(backend), maps: Default::default() }) {
            Ok(_) => attach.push(backend),
            Err(_) => refused.push(backend),
        }
    }
    assert!(!attach.is_empty(), "no capability backend attaches on this kernel");
    eprintln!("backends on this kernel: attach {attach:?}, refused {refused:?}");
    Plan { attach, refused }
}

/// Whether the backend sees `cap_capable`'s `opts`.
fn knows_opts(backend: Backend) -> bool {
    matches!(backend, Backend::Fexit | Backend::Kprobe)
}

/// The `CapKey::flags` an ordinary (audited, not in setid) check has on `backend`.
fn plain_flags(backend: Backend) -> u32 {
    if knows_opts(backend) {
        CAP_FLAG_OPTS_KNOWN
    } else {
        0
    }
}

/// The flags of the check cw-workload's setuid(0) as root makes (`ns_capable_setid`:
/// `CAP_OPT_INSETID`), judged moot: the uid is already the real and saved one
/// (kernel/sys.c __sys_setuid).
fn setid_flags(backend: Backend) -> u32 {
    let moot = Moot::SetuidUnchanged.raw() << CAP_FLAG_MOOT_SHIFT;
    if knows_opts(backend) {
        CAP_FLAG_OPTS_KNOWN | CAP_FLAG_INSETID | moot
    } else {
        moot
    }
}

/// The checks of `cap` in `cgroup` with that verdict in `syscall`: count by `CapKey::flags`.
fn checks(
    caps: &BTreeMap<CapKey, Totals>,
    cgroup: &TestCgroup,
    cap: Capability,
    denied: bool,
    syscall: u32,
) -> BTreeMap<u32, u64> {
    let mut by_flags = BTreeMap::new();
    for (key, totals) in caps {
        if key.cgroup_id == cgroup.id
            && key.cap == u32::from(cap.index())
            && (key.verdict == Verdict::Denied) == denied
            && key.syscall == syscall
        {
            *by_flags.entry(key.flags).or_insert(0) += totals.count;
        }
    }
    by_flags
}

/// The failures of `syscall` with `errno` in `cgroup`.
fn failures(failures: &BTreeMap<FailKey, Totals>, cgroup: &TestCgroup, syscall: u32, errno: i32) -> u64 {
    failures
        .iter()
        .filter(|(k, _)| k.cgroup_id == cgroup.id && k.syscall == syscall && i64::from(k.errno) == i64::from(errno))
        .map(|(_, t)| t.count)
        .sum()
}

fn assert_nothing_lost(backend: Backend, monitor: &capwatch::monitor::Monitor) {
    let losses = monitor.aggregates().losses();
    assert!(losses.iter().all(|&n| n == 0), "{backend}: the kernel side lost events: {losses:?}");
}

#[tokio::test]
async fn granted_setuid_checks_are_counted_exactly_in_setuid() {
    if !kernel_available("granted_setuid_checks_are_counted_exactly_in_setuid") {
        return;
    }
    for &backend in &plan().attach {
        let cgroup = TestCgroup::new("setuid");
        let mut monitor = cgroup.monitor_with(backend);
        let out = Launch::in_cgroup(&cgroup).run(&["setuid", "1000"]);
        assert!(out.status.success(), "{backend}: {out:?}");
        monitor.drain().expect("drain");
        let caps = monitor.aggregates().caps();
        let seen = checks(caps, &cgroup, CAP_SETUID, false, SYS_SETUID);
        assert_eq!(seen, BTreeMap::from([(setid_flags(backend), 1000)]), "{backend}: {caps:#?}");
        let (_, totals) =
            caps.iter().find(|(k, _)| k.cgroup_id == cgroup.id && k.syscall == SYS_SETUID).expect("the setuid key");
        assert_eq!(capwatch::names::comm(&totals.sample.comm), "cw-workload", "{backend}");
        assert_eq!(totals.sample.uid, 0, "{backend}");
        assert_eq!(
            capwatch::cgroup::Hierarchy::find().expect("cgroup2").path(cgroup.id).as_deref(),
            Some(cgroup.name.as_str()),
            "{backend}"
        );
        assert_nothing_lost(backend, &monitor);
    }
}

#[tokio::test]
async fn a_raw_socket_without_net_raw_is_one_denied_check_and_one_eperm_in_socket() {
    if !kernel_available("a_raw_socket_without_net_raw_is_one_denied_check_and_one_eperm_in_socket") {
        return;
    }
    for &backend in &plan().attach {
        let cgroup = TestCgroup::new("rawsock");
        let mut monitor = cgroup.monitor_with(backend);
        let out = Launch::in_cgroup(&cgroup).dropping(&[CAP_NET_RAW]).run(&["raw-socket"]);
        assert!(refused(&out), "{backend}: the raw socket should be refused: {out:?}");
        monitor.drain().expect("drain");
        let aggregates = monitor.aggregates();
        let one = BTreeMap::from([(plain_flags(backend), 1)]);
        assert_eq!(
            checks(aggregates.caps(), &cgroup, CAP_NET_RAW, true, SYS_SOCKET),
            one,
            "{backend}: {:#?}",
            aggregates.caps()
        );
        assert!(checks(aggregates.caps(), &cgroup, CAP_NET_RAW, false, SYS_SOCKET).is_empty(), "{backend}");
        assert_eq!(
            failures(aggregates.failures(), &cgroup, SYS_SOCKET, libc::EPERM),
            1,
            "{backend}: {:#?}",
            aggregates.failures()
        );

        // With the capability, the same call is a granted check and no failure.
        let out = Launch::in_cgroup(&cgroup).run(&["raw-socket"]);
        assert!(out.status.success(), "{backend}: {out:?}");
        monitor.drain().expect("drain");
        let aggregates = monitor.aggregates();
        assert_eq!(checks(aggregates.caps(), &cgroup, CAP_NET_RAW, false, SYS_SOCKET), one, "{backend}");
        assert_eq!(failures(aggregates.failures(), &cgroup, SYS_SOCKET, libc::EPERM), 1, "{backend}");
        assert_nothing_lost(backend, &monitor);
    }
}

#[tokio::test]
async fn a_mode_000_file_without_dac_capabilities_is_denied_checks_and_one_eacces_in_openat() {
    if !kernel_available("a_mode_000_file_without_dac_capabilities_is_denied_checks_and_one_eacces_in_openat") {
        return;
    }
    let file = ProtectedFile::new("backends-dac");
    for &backend in &plan().attach {
        let cgroup = TestCgroup::new("dac");
        let mut monitor = cgroup.monitor_with(backend);
        let out =
            Launch::in_cgroup(&cgroup).dropping(&[CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH]).run(&["open", file.path()]);
        assert!(refused(&out), "{backend}: opening a mode-000 file should fail: {out:?}");
        monitor.drain().expect("drain");
        let aggregates = monitor.aggregates();
        // generic_permission asks for CAP_DAC_OVERRIDE, then (a read) CAP_DAC_READ_SEARCH, once.
        for denied in [CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH] {
            assert_eq!(
                checks(aggregates.caps(), &cgroup, denied, true, SYS_OPENAT),
                BTreeMap::from([(plain_flags(backend), 1)]),
                "{backend}: denied {denied} in openat: {:#?}",
                aggregates.caps()
            );
        }
        assert_eq!(
            failures(aggregates.failures(), &cgroup, SYS_OPENAT, libc::EACCES),
            1,
            "{backend}: {:#?}",
            aggregates.failures()
        );
        assert_nothing_lost(backend, &monitor);
    }
}

#[tokio::test]
async fn only_the_watched_subtree_is_recorded() {
    if !kernel_available("only_the_watched_subtree_is_recorded") {
        return;
    }
    for &backend in &plan().attach {
        let watched = TestCgroup::new("watched");
        let a = watched.child("a");
        let b = watched.child("b");
        let outside = TestCgroup::new("outside");
        let mut monitor = watched.monitor_with(backend);
        for (cgroup, n) in [(&a, "300"), (&b, "700"), (&outside, "500")] {
            let out = Launch::in_cgroup(cgroup).run(&["setuid", n]);
            assert!(out.status.success(), "{backend}: {out:?}");
        }
        monitor.drain().expect("drain");
        let caps = monitor.aggregates().caps();
        let flags = setid_flags(backend);
        assert_eq!(checks(caps, &a, CAP_SETUID, false, SYS_SETUID), BTreeMap::from([(flags, 300)]), "{backend}");
        assert_eq!(checks(caps, &b, CAP_SETUID, false, SYS_SETUID), BTreeMap::from([(flags, 700)]), "{backend}");
        let cgroups = monitor.aggregates().cgroups();
        assert!(
            cgroups.iter().all(|id| [watched.id, a.id, b.id].contains(id)),
            "{backend}: only the watched subtree may appear, not {} or others: {cgroups:?}",
            outside.id
        );
        assert_nothing_lost(backend, &monitor);
    }
}

/// Every private writable mapping makes the kernel ask for CAP_SYS_ADMIN with
/// `CAP_OPT_NOAUDIT` (cap_vm_enough_memory). Where the backend sees `opts`, each of those checks
/// is marked advisory; where it does not, none is claimed either way. The difference between
/// 1,000 mappings and none is exactly 1,000 checks, whatever the program's start-up does.
///
/// Except where the kernel's compiler inlined `cap_capable` into `cap_vm_enough_memory` (both
/// live in security/commoncap.c): there is then no call for fexit or a kprobe to see, and these
/// checks are invisible to them. Debian's 6.1 and 6.12 builds do this; the tracepoint, inside
/// `cap_capable`'s body, sees them wherever it exists.
#[tokio::test]
async fn a_thousand_mmaps_are_a_thousand_advisory_sys_admin_checks() {
    if !kernel_available("a_thousand_mmaps_are_a_thousand_advisory_sys_admin_checks") {
        return;
    }
    for &backend in &plan().attach {
        let mut counted = Vec::new();
        for n in ["0", "1000"] {
            let cgroup = TestCgroup::new("mmap");
            let mut monitor = cgroup.monitor_with(backend);
            let out = Launch::in_cgroup(&cgroup).run(&["mmap", n]);
            assert!(out.status.success(), "{backend}: {out:?}");
            monitor.drain().expect("drain");
            let caps = monitor.aggregates().caps();
            let seen = checks(caps, &cgroup, CAP_SYS_ADMIN, false, SYS_MMAP);
            let expected_flags = if knows_opts(backend) { CAP_FLAG_OPTS_KNOWN | CAP_FLAG_NOAUDIT } else { 0 };
            assert!(
                seen.keys().all(|&flags| flags == expected_flags),
                "{backend}: every CAP_SYS_ADMIN check in mmap should have flags {expected_flags:#x}: {seen:?}"
            );
            counted.push(seen.values().sum::<u64>());
            assert_nothing_lost(backend, &monitor);
        }
        let delta = counted[1] - counted[0];
        if knows_opts(backend) && counted == [0, 0] {
            eprintln!(
                "{backend}: this kernel makes mmap's CAP_SYS_ADMIN check without calling cap_capable: not visible"
            );
        } else {
            assert_eq!(delta, 1000, "{backend}: CAP_SYS_ADMIN checks in mmap for 0 and 1000 mappings: {counted:?}");
        }
    }
}

#[test]
fn the_daemon_attaches_the_backend_it_is_told_to_and_status_reports_it() {
    if !kernel_available("the_daemon_attaches_the_backend_it_is_told_to_and_status_reports_it") {
        return;
    }
    for &backend in &plan().attach {
        let cgroup = TestCgroup::new("daemon");
        let state = StateDir::new("daemon");
        let mut daemon =
            Daemon::start(&["--probe", backend.name(), "--state-dir", state.path(), "--cgroup-root", &cgroup.name]);
        let started = daemon.wait_for_start();
        assert_eq!(started["backend"], backend.name());
        let status = capwatch_status(&state);
        assert!(status.contains(&format!("capability probe: {backend}\n")), "{status}");
        assert!(status.contains("(running)"), "{status}");
        assert_eq!(daemon.stop(), Some(0), "{backend}: the daemon should stop cleanly on SIGTERM");
    }
}

/// `auto` takes the first backend of the preference order that attaches, and says why each one
/// before it was refused: in the log, in status.json and in `capwatch status`.
#[test]
fn auto_attaches_the_most_truthful_backend_and_says_why_the_others_were_refused() {
    if !kernel_available("auto_attaches_the_most_truthful_backend_and_says_why_the_others_were_refused") {
        return;
    }
    let cgroup = TestCgroup::new("auto");
    let state = StateDir::new("auto");
    let mut daemon = Daemon::start(&["--state-dir", state.path(), "--cgroup-root", &cgroup.name]);
    let started = daemon.wait_for_start();
    let chosen = started["backend"].as_str().expect("backend").to_string();
    let status: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("status.json")).expect("status.json")).expect("JSON");
    let attempts = status["attempts"].as_array().expect("attempts");
    let order: Vec<&str> = Backend::PREFERENCE.iter().map(|b| b.name()).collect();
    let tried: Vec<&str> = attempts.iter().map(|a| a["backend"].as_str().expect("attempt backend")).collect();
    assert_eq!(tried, order[..tried.len()], "attempts follow the preference order: {status:#}");
    assert_eq!(tried.last(), Some(&chosen.as_str()), "{status:#}");
    let report = capwatch_status(&state);
    for attempt in &attempts[..attempts.len() - 1] {
        let reason = attempt["refused"].as_str().expect("a reason for each refused backend");
        assert!(!reason.is_empty() && !reason.contains('\n'), "one line: {reason:?}");
        let backend = attempt["backend"].as_str().expect("backend");
        assert!(report.contains(&format!("refused: {backend}: {reason}\n")), "{report}");
        assert!(
            !plan().attach.iter().any(|b| b.name() == backend),
            "{backend} must attach here, but auto was refused it: {reason}"
        );
    }
    assert!(attempts[attempts.len() - 1]["refused"].is_null(), "{status:#}");
    if std::env::var_os("CAPWATCH_TEST_BACKEND").is_none() {
        assert_eq!(chosen, plan().attach[0].name(), "auto should take the first backend that attaches");
    }
    assert_eq!(daemon.stop(), Some(0));
}

/// A backend the kernel cannot run is one line on stderr, saying which and why, and exit 1.
#[test]
fn a_forced_backend_the_kernel_refuses_is_one_clear_line() {
    if !kernel_available("a_forced_backend_the_kernel_refuses_is_one_clear_line") {
        return;
    }
    for &backend in &plan().refused {
        let cgroup = TestCgroup::new("refused");
        let state = StateDir::new("refused");
        let out = Command::new(bin("capwatch"))
            .args(["daemon", "--probe", backend.name(), "--state-dir", state.path(), "--cgroup-root", &cgroup.name])
            .output()
            .expect("run capwatch");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{backend}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{backend}: one line: {stderr}");
        let why = match backend {
            Backend::Fexit => "trampolines",
            Backend::Tracepoint => "Linux 6.14",
            Backend::Kprobe => "CONFIG_KPROBES",
        };
        // The backend's own reason, not the advice that follows it.
        let reason = stderr
            .split_once(&format!("no capability probe could attach ({backend}: "))
            .and_then(|(_, rest)| rest.split_once("): capwatch needs"))
            .map(|(reason, _)| reason)
            .unwrap_or_else(|| panic!("{backend}: no reason given: {stderr}"));
        assert!(reason.contains(why), "{backend}: the reason should mention {why:?}: {stderr}");
        eprintln!("{backend} refused as expected: {}", stderr.trim_end());
    }
}

/// `capwatch status --state-dir DIR`, which must succeed.
fn capwatch_status(state: &StateDir) -> String {
    let out = Command::new(bin("capwatch"))
        .args(["status", "--state-dir", state.path()])
        .output()
        .expect("run capwatch status");
    assert!(out.status.success(), "capwatch status: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// A running `capwatch daemon`.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Daemon {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(bin("capwatch"))
            .arg("daemon")
            .args(args)
            // Side by side with other tests' daemons, and whatever a host's config says.
            .env("CAPWATCH_METRICS_LISTEN", "127.0.0.1:0")
            .env("CAPWATCH_CONFIG", "/dev/null")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start capwatch");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The `started` line. Loading the programs under software emulation takes seconds.
    fn wait_for_start(&mut self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(if in_ci() { 120 } else { 30 });
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else { break };
            let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if value["event"] == "started" {
                return value;
            }
        }
        let _ = self.child.kill();
        panic!("the daemon did not start: {:?}", self.child.wait());
    }

    fn stop(mut self) -> Option<i32> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("wait").code()
    }
}

impl Drop for Daemon {
    /// A test that fails half-way leaves no daemon behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A state directory for one daemon, removed when dropped.
struct StateDir(std::path::PathBuf);

impl StateDir {
    fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("capwatch-test-{}-{label}-state", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir state dir");
        Self(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 path")
    }

    fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
