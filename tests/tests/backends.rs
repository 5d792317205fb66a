//! Which capability backends the kernel lets capwatch attach, and what capwatch says about the
//! others: the daemon attaches the backend it is told to, `auto` takes the most truthful one that
//! attaches and says why each one before it was refused, a backend the kernel refuses is one
//! clear line, and a kernel capwatch cannot run on at all is one line naming what it lacks. What
//! each backend then sees is kernel.rs's, run once per backend. These need root and BPF; in CI
//! they must run.
//!
//! `CAPWATCH_TEST_REFUSED` (comma-separated) names the backends this kernel must refuse; the
//! others must attach. Unset, the running kernel decides: what attaches is tested, what does not
//! must say why. `CAPWATCH_TEST_UNSUPPORTED` says that capwatch cannot run on this kernel at all,
//! and what its one line must name. `cargo xtask vm-test` sets them for each kernel it boots.

use std::{path::Path, process::Command, sync::OnceLock};

use capwatch::{
    probe::{self, Backend, Probe},
    selftest::Sight,
};
use capwatch_tests::{bin, kernel_available, tempdir, test_backend, Running, TestCgroup};
use serde_json::Value;

/// Which backends this kernel lets attach.
#[derive(Debug)]
struct Plan {
    attach: Vec<Backend>,
    refused: Vec<Backend>,
}

fn plan() -> &'static Plan {
    static PLAN: OnceLock<Plan> = OnceLock::new();
    PLAN.get_or_init(|| match std::env::var("CAPWATCH_TEST_REFUSED") {
        Ok(names) => {
            let refused = parse_backends(&names);
            let attach = Backend::PREFERENCE.into_iter().filter(|b| !refused.contains(b)).collect();
            Plan { attach, refused }
        }
        Err(_) => offered_here(),
    })
}

fn parse_backends(value: &str) -> Vec<Backend> {
    value
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            let choice: probe::Choice = name.parse().unwrap_or_else(|e| panic!("CAPWATCH_TEST_REFUSED: {e}"));
            choice.backend().unwrap_or_else(|| panic!("CAPWATCH_TEST_REFUSED: name backends, not {name:?}"))
        })
        .collect()
}

/// What the running kernel lets attach. At least one must, or capwatch cannot run here.
fn offered_here() -> Plan {
    let cgroup = TestCgroup::new("offered");
    let (mut attach, mut refused) = (Vec::new(), Vec::new());
    for backend in Backend::PREFERENCE {
        match Probe::start(probe::Options {
            scope: cgroup.scope(),
            backend: Some(backend),
            maps: Default::default(),
            syscall_sets: true,
            reads: probe::Reads::Casts,
        }) {
            Ok(_) => attach.push(backend),
            Err(_) => refused.push(backend),
        }
    }
    assert!(!attach.is_empty(), "no capability backend attaches on this kernel");
    eprintln!("backends on this kernel: attach {attach:?}, refused {refused:?}");
    Plan { attach, refused }
}

/// Whether this kernel is one capwatch must refuse outright; every other test needs one it runs on.
fn unsupported() -> Option<String> {
    std::env::var("CAPWATCH_TEST_UNSUPPORTED").ok().filter(|what| !what.is_empty())
}

#[test]
fn the_daemon_attaches_the_backend_it_is_told_to_and_status_reports_it() {
    if !kernel_available("the_daemon_attaches_the_backend_it_is_told_to_and_status_reports_it") {
        return;
    }
    let backend = test_backend();
    assert!(plan().attach.contains(&backend), "{backend} is tested, but this kernel must refuse it: {:?}", plan());
    let cgroup = TestCgroup::new("daemon");
    let state = tempdir("backend-daemon-state");
    let state_dir = state.to_str().expect("UTF-8 path");
    let mut daemon =
        Running::start(&["daemon", "--probe", backend.name(), "--state-dir", state_dir, "--cgroup-root", &cgroup.name]);
    let started = daemon.wait_for_start();
    assert_eq!(started["backend"], backend.name());
    let status = capwatch_status(state_dir);
    assert!(status.contains(&format!("capability probe: {backend}\n")), "{status}");
    assert!(status.contains("(running)"), "{status}");
    assert_eq!(daemon.stop(libc::SIGTERM).0, Some(0), "{backend}: the daemon should stop cleanly on SIGTERM");
    let _ = std::fs::remove_dir_all(state);
}

/// `auto` takes the first backend of the preference order that attaches, and says why each one
/// before it was refused: in the log, in status.json and in `capwatch status`.
#[test]
fn auto_attaches_the_most_truthful_backend_and_says_why_the_others_were_refused() {
    if !kernel_available("auto_attaches_the_most_truthful_backend_and_says_why_the_others_were_refused") {
        return;
    }
    let cgroup = TestCgroup::new("auto");
    let state = tempdir("backend-auto-state");
    let state_dir = state.to_str().expect("UTF-8 path");
    let mut daemon =
        Running::start(&["daemon", "--probe", "auto", "--state-dir", state_dir, "--cgroup-root", &cgroup.name]);
    let started = daemon.wait_for_start();
    let chosen = started["backend"].as_str().expect("backend").to_string();
    assert_eq!(chosen, plan().attach[0].name(), "auto should take the first backend that attaches: {:?}", plan());
    let status: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("status.json")).expect("status.json")).expect("JSON");
    let attempts = status["attempts"].as_array().expect("attempts");
    let order: Vec<&str> = Backend::PREFERENCE.iter().map(|b| b.name()).collect();
    let tried: Vec<&str> = attempts.iter().map(|a| a["backend"].as_str().expect("attempt backend")).collect();
    assert_eq!(tried, order[..tried.len()], "attempts follow the preference order: {status:#}");
    assert_eq!(tried.last(), Some(&chosen.as_str()), "{status:#}");
    let report = capwatch_status(state_dir);
    for attempt in &attempts[..attempts.len() - 1] {
        let reason = attempt["refused"].as_str().expect("a reason for each refused backend");
        assert!(!reason.is_empty() && !reason.contains('\n'), "one line: {reason:?}");
        let backend = attempt["backend"].as_str().expect("backend");
        assert!(report.contains(&format!("refused: {backend}: {reason}\n")), "{report}");
    }
    assert!(attempts[attempts.len() - 1]["refused"].is_null(), "{status:#}");
    eprintln!("auto attached {chosen}");
    assert_eq!(daemon.stop(libc::SIGTERM).0, Some(0));
    let _ = std::fs::remove_dir_all(state);
}

/// A backend the kernel cannot run is one line on stderr, saying which and why, and exit 1.
#[test]
fn a_forced_backend_the_kernel_refuses_is_one_clear_line() {
    if !kernel_available("a_forced_backend_the_kernel_refuses_is_one_clear_line") {
        return;
    }
    for &backend in &plan().refused {
        let cgroup = TestCgroup::new("refused");
        let state = tempdir("backend-refused-state");
        let out = Command::new(bin("capwatch"))
            .args(["daemon", "--probe", backend.name(), "--cgroup-root", &cgroup.name, "--state-dir"])
            .arg(&state)
            .env("CAPWATCH_CONFIG", "/dev/null")
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
        let _ = std::fs::remove_dir_all(state);
    }
}

/// The kprobe programs pass this kernel's verifier even where kprobes cannot attach, and so do
/// the programs of the backend under test.
#[test]
fn the_programs_pass_this_kernels_verifier() {
    if !kernel_available("the_programs_pass_this_kernels_verifier") {
        return;
    }
    for backend in [Backend::Kprobe, test_backend()] {
        Probe::verify(backend).unwrap_or_else(|e| panic!("the {backend} programs should load: {e}"));
    }
}

/// On a kernel that lacks what every backend needs, capwatch says so in one line that names it,
/// and exits 1. Elsewhere there is nothing to refuse: every other test here is the proof.
#[test]
fn a_kernel_capwatch_cannot_run_on_is_one_line_naming_what_it_lacks() {
    let Some(lacking) = unsupported() else { return };
    if !kernel_available("a_kernel_capwatch_cannot_run_on_is_one_line_naming_what_it_lacks") {
        return;
    }
    let cgroup = TestCgroup::new("unsupported");
    let state = tempdir("backend-unsupported-state");
    for probe in std::iter::once("auto").chain(Backend::PREFERENCE.map(Backend::name)) {
        let out = Command::new(bin("capwatch"))
            .args(["daemon", "--probe", probe, "--cgroup-root", &cgroup.name, "--state-dir"])
            .arg(&state)
            .env("CAPWATCH_CONFIG", "/dev/null")
            .output()
            .expect("run capwatch");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "--probe {probe}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "--probe {probe}: one line: {stderr}");
        assert!(stderr.contains(&lacking), "--probe {probe}: the line should name {lacking:?}: {stderr}");
        eprintln!("--probe {probe} refused as expected: {}", stderr.trim_end());
    }
    let _ = std::fs::remove_dir_all(state);
}

/// The daemon proves its sight before it says it started: one `selftest` line, its findings in
/// status.json and `capwatch status`, and nothing of the self-test in the lines, the store or
/// the cgroup hierarchy.
#[test]
fn the_daemon_proves_its_sight_at_start_and_keeps_nothing_of_it() {
    if !kernel_available("the_daemon_proves_its_sight_at_start_and_keeps_nothing_of_it") {
        return;
    }
    let backend = test_backend();
    let cgroup = TestCgroup::new("sight");
    let state = tempdir("backend-sight-state");
    let state_dir = state.to_str().expect("UTF-8 path");
    let mut daemon = Running::start(&["daemon", "--state-dir", state_dir, "--cgroup-root", &cgroup.name]);
    let started = daemon.wait_for_start();
    assert_eq!(started["backend"], backend.name());
    let lines: Vec<Value> = daemon.seen.iter().map(|l| serde_json::from_str(l).expect("JSON lines")).collect();
    let selftest: Vec<&Value> = lines.iter().filter(|v| v["event"] == "selftest").collect();
    assert_eq!(selftest.len(), 1, "{backend}: one selftest line: {lines:#?}");
    let status: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("status.json")).expect("status.json")).expect("JSON");
    let sight: Sight = serde_json::from_value(status["sight"].clone()).expect("the sight in status.json");
    assert!(sight.unproven.is_none(), "{backend}: {sight:#?}");
    assert_eq!(selftest[0]["millis"], sight.millis, "{backend}");
    eprintln!(
        "{backend}: the daemon's self-test took {} ms; hooked {:?}; blind to {:?}",
        sight.millis,
        sight.hooked(),
        sight.warnings()
    );
    let report = capwatch_status(state_dir);
    assert!(report.contains(&format!("self-test: {} ms", sight.millis)), "{report}");
    for warning in sight.warnings() {
        assert!(report.contains(&format!("blind spot: {warning}\n")), "{report}");
        assert_eq!(selftest[0]["level"], "WARN", "{backend}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&cgroup.dir)
        .expect("the test cgroup")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("capwatch-selftest"))
        .collect();
    assert!(leftovers.is_empty(), "{backend}: the self-test's cgroup is still there: {leftovers:?}");
    let (code, all) = daemon.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{backend}");
    let observed: Vec<&String> =
        all.iter().filter(|l| l.contains("\"capability_check\"") || l.contains("\"syscall_failure\"")).collect();
    assert!(observed.is_empty(), "{backend}: the self-test reached the lines: {observed:#?}");
    let store = capwatch::store::Store::open_read_only(Path::new(state_dir)).expect("the store");
    assert!(store.kernel_checks().expect("checks").is_empty(), "{backend}: the self-test reached the store");
    assert!(store.counts().expect("counts").is_empty(), "{backend}: the self-test reached the store");
    drop(store);
    let _ = std::fs::remove_dir_all(state);
}

/// `capwatch status --state-dir DIR`, which must succeed.
fn capwatch_status(state_dir: &str) -> String {
    let out =
        Command::new(bin("capwatch")).args(["status", "--state-dir", state_dir]).output().expect("run capwatch status");
    assert!(out.status.success(), "capwatch status: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8")
}
