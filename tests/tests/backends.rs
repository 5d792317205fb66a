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
    path::Path,
    process::{Child, Command, Stdio},
    sync::{mpsc, OnceLock},
    time::{Duration, Instant},
};

use caps::Capability::{
    self, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_NET_RAW, CAP_PERFMON, CAP_SETPCAP, CAP_SETUID, CAP_SYS_ADMIN,
    CAP_SYS_PTRACE, CAP_SYS_RAWIO,
};
use capwatch::{
    cgroup::Hierarchy,
    monitor::Monitor,
    probe::{self, Backend, Probe},
    selftest::{self, Kind, Sight},
};
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
const SYS_CAPSET: u32 = libc::SYS_capset as u32;

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

/// A monitor on `backend` whose sight the self-test proved, as the daemon's is: where the
/// kernel inlined `cap_capable` into a direct caller, a program on that caller is attached.
fn proven_monitor(cgroup: &TestCgroup, backend: Backend) -> (Monitor, Sight) {
    let mut monitor = cgroup.monitor_with(backend);
    let hierarchy = Hierarchy::find().expect("cgroup2");
    let sight = selftest::run(&mut monitor, &hierarchy, Path::new(&cgroup.name), &bin("capwatch"));
    eprintln!(
        "{backend}: self-test in {} ms, watching {:?}, blind to {:?}",
        sight.millis,
        sight.hooked(),
        sight.warnings()
    );
    assert!(sight.unproven.is_none(), "{backend}: the self-test could not run: {sight:#?}");
    let required = [
        Kind::Capable,
        Kind::Denied,
        Kind::Capset,
        Kind::LowMmap,
        Kind::VmAccounting,
        Kind::Ptrace,
        Kind::Failure,
        Kind::Seccomp,
    ];
    let blind: Vec<Kind> = sight.blind_spots.iter().map(|b| b.kind).filter(|k| required.contains(k)).collect();
    assert!(blind.is_empty(), "{backend}: capwatch cannot see {blind:?} on this kernel: {sight:#?}");
    // Nothing of the self-test is left for the readers.
    assert!(monitor.aggregates().cgroups().is_empty(), "{backend}: {:?}", monitor.aggregates().cgroups());
    (monitor, sight)
}

/// vm.mmap_min_addr: the address below which a mapping needs CAP_SYS_RAWIO.
fn mmap_min_addr() -> u64 {
    std::fs::read_to_string("/proc/sys/vm/mmap_min_addr").expect("vm.mmap_min_addr").trim().parse().expect("a number")
}

fn assert_nothing_lost(backend: Backend, monitor: &Monitor) {
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
            Hierarchy::find().expect("cgroup2").path(cgroup.id).as_deref(),
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
/// Where the kernel's compiler inlined `cap_capable` into `cap_vm_enough_memory` (Debian's 6.1
/// and 6.12 builds do), the probe on `cap_capable` cannot see these checks; the self-test then
/// attaches a program to `cap_vm_enough_memory` itself, and the count is the same.
#[tokio::test]
async fn a_thousand_mmaps_are_a_thousand_advisory_sys_admin_checks() {
    if !kernel_available("a_thousand_mmaps_are_a_thousand_advisory_sys_admin_checks") {
        return;
    }
    for &backend in &plan().attach {
        let mut counted = Vec::new();
        for n in ["0", "1000"] {
            let cgroup = TestCgroup::new("mmap");
            let (mut monitor, _) = proven_monitor(&cgroup, backend);
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
        assert_eq!(
            counted[1] - counted[0],
            1000,
            "{backend}: CAP_SYS_ADMIN checks in mmap for 0 and 1000 mappings: {counted:?}"
        );
    }
}

/// capset(2) asks for CAP_SETPCAP every time, from `cap_capset` itself (`cap_inh_is_capped`),
/// whether or not the answer decides anything: one check per call, exactly, on every backend,
/// granted with the capability and denied without it, and moot here (the inheritable set does
/// not grow), so that capset still succeeds without it.
#[tokio::test]
async fn every_capset_is_one_setpcap_check_in_capset() {
    if !kernel_available("every_capset_is_one_setpcap_check_in_capset") {
        return;
    }
    for &backend in &plan().attach {
        let cgroup = TestCgroup::new("capset");
        let (mut monitor, _) = proven_monitor(&cgroup, backend);
        let out = Launch::in_cgroup(&cgroup).run(&["capset", "100"]);
        assert!(out.status.success(), "{backend}: {out:?}");
        let out = Launch::in_cgroup(&cgroup).dropping(&[CAP_SETPCAP]).run(&["capset", "40"]);
        assert!(out.status.success(), "{backend}: a capset that keeps the sets needs no CAP_SETPCAP: {out:?}");
        monitor.drain().expect("drain");
        let aggregates = monitor.aggregates();
        // Judged moot from the syscall's arguments, by the program on cap_capset too.
        let flags = plain_flags(backend) | Moot::CapsetWithinPermitted.raw() << CAP_FLAG_MOOT_SHIFT;
        let caps = aggregates.caps();
        assert_eq!(
            checks(caps, &cgroup, CAP_SETPCAP, false, SYS_CAPSET),
            BTreeMap::from([(flags, 100)]),
            "{backend}: {caps:#?}"
        );
        assert_eq!(
            checks(caps, &cgroup, CAP_SETPCAP, true, SYS_CAPSET),
            BTreeMap::from([(flags, 40)]),
            "{backend}: {caps:#?}"
        );
        assert_eq!(failures(aggregates.failures(), &cgroup, SYS_CAPSET, libc::EPERM), 0, "{backend}");
        assert_nothing_lost(backend, &monitor);
    }
}

/// A mapping below vm.mmap_min_addr asks for CAP_SYS_RAWIO, from `cap_mmap_addr` itself: one
/// check per mapping on every backend; without the capability, the mapping fails with EPERM.
#[tokio::test]
async fn a_mapping_below_mmap_min_addr_is_one_sys_rawio_check_in_mmap() {
    if !kernel_available("a_mapping_below_mmap_min_addr_is_one_sys_rawio_check_in_mmap") {
        return;
    }
    if mmap_min_addr() == 0 {
        eprintln!("SKIPPED: vm.mmap_min_addr is 0 here, so no mapping is below it");
        return;
    }
    for &backend in &plan().attach {
        let cgroup = TestCgroup::new("mmaplow");
        let (mut monitor, _) = proven_monitor(&cgroup, backend);
        let out = Launch::in_cgroup(&cgroup).run(&["mmap-low", "100"]);
        assert!(out.status.success(), "{backend}: {out:?}");
        let out = Launch::in_cgroup(&cgroup).dropping(&[CAP_SYS_RAWIO]).run(&["mmap-low", "1"]);
        assert!(refused(&out), "{backend}: a mapping at 0 without CAP_SYS_RAWIO should fail: {out:?}");
        monitor.drain().expect("drain");
        let aggregates = monitor.aggregates();
        let flags = plain_flags(backend);
        let caps = aggregates.caps();
        assert_eq!(
            checks(caps, &cgroup, CAP_SYS_RAWIO, false, SYS_MMAP),
            BTreeMap::from([(flags, 100)]),
            "{backend}: {caps:#?}"
        );
        assert_eq!(
            checks(caps, &cgroup, CAP_SYS_RAWIO, true, SYS_MMAP),
            BTreeMap::from([(flags, 1)]),
            "{backend}: {caps:#?}"
        );
        let failed: Vec<_> =
            aggregates.failures().iter().filter(|(k, _)| k.cgroup_id == cgroup.id && k.syscall == SYS_MMAP).collect();
        assert!(
            matches!(failed[..], [(k, t)] if i32::from(k.errno) == libc::EPERM && k.denied == CAP_SYS_RAWIO.bitmask() && t.count == 1),
            "{backend}: one EPERM in mmap, with CAP_SYS_RAWIO denied in it: {failed:#?}"
        );
        assert_nothing_lost(backend, &monitor);
    }
}

/// A ptrace access check the capability LSM cannot settle by comparing the two processes'
/// capabilities asks for CAP_SYS_PTRACE (cap_ptrace_access_check): one check per open of a
/// child's /proc/PID/environ, on every backend; without the capability, the open fails with
/// EACCES. (6.18's mm_access then lets perfmon_capable() through instead, CAP_PERFMON or
/// CAP_SYS_ADMIN: they go too.)
#[tokio::test]
async fn a_ptrace_access_check_is_one_sys_ptrace_check() {
    if !kernel_available("a_ptrace_access_check_is_one_sys_ptrace_check") {
        return;
    }
    for &backend in &plan().attach {
        let cgroup = TestCgroup::new("ptrace");
        let (mut monitor, _) = proven_monitor(&cgroup, backend);
        let out = Launch::in_cgroup(&cgroup).run(&["ptrace-read", "100"]);
        assert!(out.status.success(), "{backend}: {out:?}");
        let out = Launch::in_cgroup(&cgroup)
            .dropping(&[CAP_SYS_PTRACE, CAP_PERFMON, CAP_SYS_ADMIN])
            .run(&["ptrace-read", "1"]);
        assert!(refused(&out), "{backend}: without CAP_SYS_PTRACE the open should fail: {out:?}");
        monitor.drain().expect("drain");
        let aggregates = monitor.aggregates();
        let flags = plain_flags(backend);
        let caps = aggregates.caps();
        assert_eq!(
            checks(caps, &cgroup, CAP_SYS_PTRACE, false, SYS_OPENAT),
            BTreeMap::from([(flags, 100)]),
            "{backend}: {caps:#?}"
        );
        assert_eq!(
            checks(caps, &cgroup, CAP_SYS_PTRACE, true, SYS_OPENAT),
            BTreeMap::from([(flags, 1)]),
            "{backend}: {caps:#?}"
        );
        assert_eq!(
            failures(aggregates.failures(), &cgroup, SYS_OPENAT, libc::EACCES),
            1,
            "{backend}: {:#?}",
            aggregates.failures()
        );
        assert_nothing_lost(backend, &monitor);
    }
}

/// The daemon proves its sight before it says it started: one `selftest` line, its findings in
/// status.json and `capwatch status`, well under a second, and nothing of the self-test in the
/// lines, the store or the cgroup hierarchy.
#[test]
fn the_daemon_proves_its_sight_at_start_and_keeps_nothing_of_it() {
    if !kernel_available("the_daemon_proves_its_sight_at_start_and_keeps_nothing_of_it") {
        return;
    }
    for &backend in &plan().attach {
        let cgroup = TestCgroup::new("sight");
        let state = StateDir::new("sight");
        let mut daemon =
            Daemon::start(&["--probe", backend.name(), "--state-dir", state.path(), "--cgroup-root", &cgroup.name]);
        let started = daemon.wait_for_start();
        assert_eq!(started["backend"], backend.name());
        let seen = daemon.seen.clone();
        let selftest: Vec<&Value> = seen.iter().filter(|v| v["event"] == "selftest").collect();
        assert_eq!(selftest.len(), 1, "{backend}: one selftest line: {seen:#?}");
        let status: Value =
            serde_json::from_str(&std::fs::read_to_string(state.join("status.json")).expect("status.json"))
                .expect("JSON");
        let sight: Sight = serde_json::from_value(status["sight"].clone()).expect("the sight in status.json");
        assert!(sight.unproven.is_none(), "{backend}: {sight:#?}");
        assert_eq!(selftest[0]["millis"], sight.millis, "{backend}");
        assert!(sight.millis < 10_000, "{backend}: the self-test took {} ms", sight.millis);
        eprintln!("{backend}: the daemon's self-test took {} ms; blind to {:?}", sight.millis, sight.warnings());
        let report = capwatch_status(&state);
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
        let (code, rest) = daemon.stop_reading();
        assert_eq!(code, Some(0), "{backend}");
        let observed: Vec<_> = seen
            .iter()
            .chain(&rest)
            .filter(|v| v["event"] == "capability_check" || v["event"] == "syscall_failure")
            .collect();
        assert!(observed.is_empty(), "{backend}: the self-test reached the lines: {observed:#?}");
        let store = capwatch::store::Store::open_read_only(Path::new(state.path())).expect("the store");
        assert!(store.kernel_checks().expect("checks").is_empty(), "{backend}: the self-test reached the store");
        assert!(store.counts().expect("counts").is_empty(), "{backend}: the self-test reached the store");
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
    /// Its lines up to `started`.
    seen: Vec<Value>,
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
        Self { child, lines, seen: Vec::new() }
    }

    /// The `started` line. Loading the programs under software emulation takes seconds.
    fn wait_for_start(&mut self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(if in_ci() { 120 } else { 30 });
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else { break };
            let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            self.seen.push(value.clone());
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

    /// Stops it, and returns its exit code and the lines it wrote after `started`.
    fn stop_reading(mut self) -> (Option<i32>, Vec<Value>) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let code = self.child.wait().expect("wait").code();
        let rest = self.lines.iter().map(|line| serde_json::from_str(&line).expect("JSON lines")).collect();
        (code, rest)
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
