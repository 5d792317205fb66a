//! capwatch's programs in the real kernel: real cgroups, capabilities really dropped, exact
//! counts, nothing lost. Each test runs on the run's capability backend (`CAPWATCH_TEST_PROBE`,
//! see `capwatch_tests::test_probe`) and derives what a key's flags must say from the backend
//! that attached, so the same assertions hold on every backend of every kernel; `cargo xtask
//! vm-test` runs this file once per backend on each kernel it boots. These need root and BPF;
//! in CI they must run.

use std::collections::BTreeMap;

use caps::Capability::{
    self, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_MKNOD, CAP_NET_BIND_SERVICE, CAP_NET_RAW, CAP_PERFMON,
    CAP_SETPCAP, CAP_SETUID, CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_RAWIO,
};
use capwatch::{
    monitor::Monitor,
    probe::Reads,
    selftest::{Kind, Sight},
};
use capwatch_common::{
    CapKey, FailKey, Moot, Origin, Seccomp, Verdict, CAP_FLAG_FOREIGN_CRED, CAP_FLAG_KEPT, CAP_FLAG_MOOT_SHIFT,
    CAP_FLAG_OUTER_USERNS, CAP_OPT_INSETID, CAP_OPT_NOAUDIT,
};
use capwatch_tests::{emulated, kernel_available, opts_flags, reaches, refused, Launch, ProtectedFile, TestCgroup};

const SYS_SOCKET: u32 = libc::SYS_socket as u32;
const SYS_SETUID: u32 = libc::SYS_setuid as u32;
const SYS_OPENAT: u32 = libc::SYS_openat as u32;
const SYS_ACCESS: u32 = libc::SYS_access as u32;
/// glibc's mknod(3) makes the mknodat syscall.
const SYS_MKNODAT: u32 = libc::SYS_mknodat as u32;
const SYS_MMAP: u32 = libc::SYS_mmap as u32;
const SYS_CAPSET: u32 = libc::SYS_capset as u32;

/// How the kernel made a check: with which `opts` (what a backend records of them depends on the
/// backend), and what its credentials and the syscall's arguments made of it (the same on every
/// backend: the kernel side judges them from the same loads).
#[derive(Clone, Copy)]
struct Made {
    opts: u32,
    judged: u32,
}

/// An ordinary check (`capable`, `ns_capable`) on the task's own credentials.
const PLAIN: Made = Made { opts: 0, judged: 0 };
/// cw-workload's setuid(0) as uid 0, with or without CAP_SETUID: `ns_capable_setid`
/// (`CAP_OPT_INSETID`), and moot: the uid asked for is already the real and saved one
/// (kernel/sys.c __sys_setuid).
const SETID: Made = Made { opts: CAP_OPT_INSETID, judged: Moot::SetuidUnchanged.raw() << CAP_FLAG_MOOT_SHIFT };
/// The overcommit accounting's probe (`cap_vm_enough_memory`): `CAP_OPT_NOAUDIT`.
const ADVISORY: Made = Made { opts: CAP_OPT_NOAUDIT, judged: 0 };
/// A check against a user namespace above the credentials' own.
const OUTER_USERNS: Made = Made { opts: 0, judged: CAP_FLAG_OUTER_USERNS };
/// A check on credentials the kernel made for the call, not the task's own.
const FOREIGN_CRED: Made = Made { opts: 0, judged: CAP_FLAG_FOREIGN_CRED };

/// A test's cgroup with capwatch attached to it on the run's backend.
struct Watched {
    cgroup: TestCgroup,
    monitor: Monitor,
    /// What the monitor's self-test found.
    sight: Sight,
}

impl Watched {
    fn new(label: &str) -> Self {
        Self::reading(label, Reads::Casts)
    }

    /// `new`, its programs reading the current task as `reads` says.
    fn reading(label: &str, reads: Reads) -> Self {
        let cgroup = TestCgroup::new(label);
        let (monitor, sight) = cgroup.proven_monitor_reading(reads);
        Self { cgroup, monitor, sight }
    }

    /// The key of a check the application made, as the attached backend records it.
    fn app(&self, cap: Capability, verdict: Verdict, syscall: u32, made: Made) -> CapKey {
        self.key(&self.cgroup, cap, verdict, syscall, Origin::App, made)
    }

    fn key(
        &self,
        cgroup: &TestCgroup,
        cap: Capability,
        verdict: Verdict,
        syscall: u32,
        origin: Origin,
        made: Made,
    ) -> CapKey {
        let flags = opts_flags(self.monitor.probe().backend(), made.opts) | made.judged;
        CapKey { cgroup_id: cgroup.id, cap: cap.index().into(), syscall, verdict, origin, flags }
    }

    /// Every key of `cap` checked in `syscall` in `cgroup` with its count, whatever its verdict,
    /// origin and flags: a test compares all of them, so a check recorded under another key fails it.
    fn checks(&self, cgroup: &TestCgroup, cap: Capability, syscall: u32) -> BTreeMap<CapKey, u64> {
        self.monitor
            .aggregates()
            .caps()
            .iter()
            .filter(|(k, _)| k.cgroup_id == cgroup.id && k.cap == u32::from(cap.index()) && k.syscall == syscall)
            .map(|(k, t)| (*k, t.count))
            .collect()
    }

    fn failures(&self) -> BTreeMap<FailKey, u64> {
        self.monitor
            .aggregates()
            .failures()
            .iter()
            .filter(|(k, _)| k.cgroup_id == self.cgroup.id)
            .map(|(k, t)| (*k, t.count))
            .collect()
    }

    fn drain(&mut self) {
        self.monitor.drain().expect("drain");
    }

    fn assert_nothing_lost(&self) {
        let losses = self.monitor.aggregates().losses();
        assert!(losses.iter().all(|&n| n == 0), "{}: the kernel side lost events: {losses:?}", self.backend());
    }

    fn backend(&self) -> capwatch::probe::Backend {
        self.monitor.probe().backend()
    }

    /// That the self-test found capwatch able to see checks of `kind` here, which security/
    /// commoncap.c's `caller` makes by calling `cap_capable` directly: where this kernel's build
    /// inlined `cap_capable` there (`capwatch_tests::reaches`), by a program on `caller` itself.
    fn assert_sees(&self, kind: Kind, caller: &str) {
        let backend = self.backend();
        let blind = self.sight.blind_spots.iter().any(|b| b.kind == kind);
        assert!(!blind, "{backend}: capwatch cannot see {kind:?} on this kernel: {:#?}", self.sight);
        if reaches(backend, caller) == Some(false) {
            let hooked = self.sight.hooked();
            assert!(
                hooked.iter().any(|h| h.split_whitespace().next() == Some(caller)),
                "{backend}: cap_capable is inlined into {caller} here, so {caller} must be hooked: {hooked:?}"
            );
        }
    }
}

/// The failure of `syscall` with `errno` by the application, as root, with what was denied in it.
fn app_failure(cgroup: &TestCgroup, syscall: u32, errno: i32, seccomp: Seccomp, denied: u64) -> FailKey {
    FailKey { cgroup_id: cgroup.id, syscall, errno: errno as u16, origin: Origin::App, uid: 0, seccomp, denied }
}

fn bit(cap: Capability) -> u64 {
    1 << cap.index()
}

#[tokio::test]
async fn setuid_as_root_makes_exactly_one_granted_check_per_call() {
    if !kernel_available("setuid_as_root_makes_exactly_one_granted_check_per_call") {
        return;
    }
    let mut w = Watched::new("setuid");
    let out = Launch::in_cgroup(&w.cgroup).run(&["setuid", "1000"]);
    assert!(out.status.success(), "{out:?}");
    w.drain();
    let key = w.app(CAP_SETUID, Verdict::Granted, SYS_SETUID, SETID);
    assert_eq!(w.checks(&w.cgroup, CAP_SETUID, SYS_SETUID), BTreeMap::from([(key, 1000)]), "{}", w.backend());
    // Learnt now, the key has its counting slot: the next thousand are counted there, and the
    // key's count stays exact.
    let out = Launch::in_cgroup(&w.cgroup).run(&["setuid", "1000"]);
    assert!(out.status.success(), "{out:?}");
    w.drain();
    assert_eq!(w.checks(&w.cgroup, CAP_SETUID, SYS_SETUID), BTreeMap::from([(key, 2000)]), "{}", w.backend());
    assert_eq!(w.monitor.counted_in_slot(&key).expect("slot read"), 1000);
    let sample = w.monitor.aggregates().caps()[&key].sample;
    assert_eq!(capwatch::names::comm(&sample.comm), "cw-workload");
    assert_eq!(sample.uid, 0);
    assert_eq!(
        capwatch::cgroup::Hierarchy::find().expect("cgroup2").path(w.cgroup.id).as_deref(),
        Some(w.cgroup.name.as_str())
    );
    w.assert_nothing_lost();
}

/// Where the kernel has `bpf_rdonly_cast` and group scheduling (a task's `se.cfs_rq->rq`), each
/// CPU that made a check reads the current task from its own copy of the per-CPU variable behind
/// `current`, which it confirmed against the helper's task (capwatch-ebpf/src/task.rs); without
/// group scheduling, through the helper; without the kfunc, it never looks.
#[tokio::test]
async fn each_cpu_reads_the_current_task_from_its_own_copy_where_the_kernel_allows() {
    if !kernel_available("each_cpu_reads_the_current_task_from_its_own_copy_where_the_kernel_allows") {
        return;
    }
    let mut w = Watched::new("current");
    assert_eq!(w.monitor.probe().casts_refused(), None, "the kernel refused the casts");
    let out = Launch::in_cgroup(&w.cgroup).run(&["setuid", "1000"]);
    assert!(out.status.success(), "{out:?}");
    w.drain();
    let btf = btf_rs::Btf::from_file("/sys/kernel/btf/vmlinux").expect("the kernel's BTF");
    let named = |name: &str| btf.resolve_types_by_name(name).unwrap_or_default();
    let cast = named("bpf_rdonly_cast").iter().any(|t| matches!(t, btf_rs::Type::Func(_)));
    let group_scheduling = named("cfs_rq").iter().any(|t| match t {
        btf_rs::Type::Struct(s) => s.members.iter().any(|m| btf.resolve_name(m).is_ok_and(|n| n == "rq")),
        _ => false,
    });
    // Every probe's copy of the map, this test's among them: a CPU's copy of the variable lies at
    // the same address in each.
    let mut found: BTreeMap<usize, u64> = BTreeMap::new();
    for info in aya::maps::loaded_maps().filter_map(Result::ok) {
        if info.name_as_str() != Some("CW_CURRENT_TASK") {
            continue;
        }
        let Ok(data) = aya::maps::MapData::from_id(info.id()) else { continue };
        let map: aya::maps::PerCpuArray<_, u64> =
            aya::maps::PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data)).expect("a per-CPU array");
        for (cpu, &at) in map.get(&0, 0).expect("slot 0").iter().enumerate() {
            if at != 0 {
                let first = *found.entry(cpu).or_insert(at);
                assert_eq!(first, at, "CPU {cpu}: {found:x?}");
            }
        }
    }
    let helper = found.values().filter(|&&at| at == 1).count();
    match (cast, group_scheduling) {
        (true, true) => assert!(!found.is_empty() && helper == 0, "{found:x?}"),
        (true, false) => assert!(!found.is_empty() && helper == found.len(), "{found:x?}"),
        (false, _) => assert!(found.is_empty(), "{found:x?}"),
    }
    w.assert_nothing_lost();
}

/// The helpers, which read the current task where the kernel lacks the casts or refuses them,
/// give the same keys and counts: the task, the syscall and the verdict's evidence.
#[tokio::test]
async fn checks_read_through_the_helpers_are_counted_as_through_the_casts() {
    if !kernel_available("checks_read_through_the_helpers_are_counted_as_through_the_casts") {
        return;
    }
    let mut w = Watched::reading("helpers", Reads::Helpers);
    let out = Launch::in_cgroup(&w.cgroup).run(&["setuid", "1000"]);
    assert!(out.status.success(), "{out:?}");
    let out = Launch::in_cgroup(&w.cgroup).dropping(&[CAP_NET_RAW]).run(&["raw-socket"]);
    assert!(refused(&out), "the raw socket should be refused: {out:?}");
    w.drain();
    let granted = w.app(CAP_SETUID, Verdict::Granted, SYS_SETUID, SETID);
    assert_eq!(w.checks(&w.cgroup, CAP_SETUID, SYS_SETUID), BTreeMap::from([(granted, 1000)]), "{}", w.backend());
    let denied = w.app(CAP_NET_RAW, Verdict::Denied, SYS_SOCKET, PLAIN);
    assert_eq!(w.checks(&w.cgroup, CAP_NET_RAW, SYS_SOCKET), BTreeMap::from([(denied, 1)]), "{}", w.backend());
    let failure = app_failure(&w.cgroup, SYS_SOCKET, libc::EPERM, Seccomp::None, bit(CAP_NET_RAW));
    assert_eq!(w.failures(), BTreeMap::from([(failure, 1)]));
    w.assert_nothing_lost();
}

#[tokio::test]
async fn a_raw_socket_without_net_raw_is_a_denied_check_and_an_eperm() {
    if !kernel_available("a_raw_socket_without_net_raw_is_a_denied_check_and_an_eperm") {
        return;
    }
    let mut w = Watched::new("rawsock");
    let out = Launch::in_cgroup(&w.cgroup).dropping(&[CAP_NET_RAW]).run(&["raw-socket"]);
    assert!(refused(&out), "the raw socket should be refused: {out:?}");
    w.drain();
    let denied = w.app(CAP_NET_RAW, Verdict::Denied, SYS_SOCKET, PLAIN);
    assert_eq!(w.checks(&w.cgroup, CAP_NET_RAW, SYS_SOCKET), BTreeMap::from([(denied, 1)]), "{}", w.backend());
    let failure = app_failure(&w.cgroup, SYS_SOCKET, libc::EPERM, Seccomp::None, bit(CAP_NET_RAW));
    assert_eq!(w.failures(), BTreeMap::from([(failure, 1)]));

    // With the capability, the same call is a granted check and no failure.
    let out = Launch::in_cgroup(&w.cgroup).run(&["raw-socket"]);
    assert!(out.status.success(), "{out:?}");
    w.drain();
    let granted = w.app(CAP_NET_RAW, Verdict::Granted, SYS_SOCKET, PLAIN);
    assert_eq!(w.checks(&w.cgroup, CAP_NET_RAW, SYS_SOCKET), BTreeMap::from([(denied, 1), (granted, 1)]));
    assert_eq!(w.failures(), BTreeMap::from([(failure, 1)]));
    w.assert_nothing_lost();
}

#[tokio::test]
async fn a_mode_000_file_without_dac_capabilities_is_two_denied_checks_and_an_eacces() {
    if !kernel_available("a_mode_000_file_without_dac_capabilities_is_two_denied_checks_and_an_eacces") {
        return;
    }
    let file = ProtectedFile::new("kernel-dac");
    let mut w = Watched::new("dac");
    let out =
        Launch::in_cgroup(&w.cgroup).dropping(&[CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH]).run(&["open", file.path()]);
    assert!(refused(&out), "opening a mode-000 file should fail: {out:?}");
    w.drain();
    // generic_permission asks for CAP_DAC_READ_SEARCH (a read), then CAP_DAC_OVERRIDE, once each.
    for cap in [CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH] {
        let denied = w.app(cap, Verdict::Denied, SYS_OPENAT, PLAIN);
        assert_eq!(w.checks(&w.cgroup, cap, SYS_OPENAT), BTreeMap::from([(denied, 1)]), "{}: {cap}", w.backend());
    }
    let failure = app_failure(
        &w.cgroup,
        SYS_OPENAT,
        libc::EACCES,
        Seccomp::None,
        bit(CAP_DAC_OVERRIDE) | bit(CAP_DAC_READ_SEARCH),
    );
    assert_eq!(w.failures(), BTreeMap::from([(failure, 1)]));
    w.assert_nothing_lost();
}

#[tokio::test]
async fn each_cgroup_sees_only_its_own_processes() {
    if !kernel_available("each_cgroup_sees_only_its_own_processes") {
        return;
    }
    let mut w = Watched::new("watched");
    let a = w.cgroup.child("a");
    let b = w.cgroup.child("b");
    let outside = TestCgroup::new("outside");
    for (cgroup, n) in [(&a, "300"), (&b, "700"), (&outside, "500")] {
        let out = Launch::in_cgroup(cgroup).run(&["setuid", n]);
        assert!(out.status.success(), "{out:?}");
    }
    w.drain();
    for (cgroup, n) in [(&a, 300), (&b, 700)] {
        let key = w.key(cgroup, CAP_SETUID, Verdict::Granted, SYS_SETUID, Origin::App, SETID);
        assert_eq!(w.checks(cgroup, CAP_SETUID, SYS_SETUID), BTreeMap::from([(key, n)]), "{}", w.backend());
    }
    let cgroups = w.monitor.aggregates().cgroups();
    assert!(!cgroups.contains(&outside.id), "a cgroup outside the watched subtree was recorded");
    assert!(
        cgroups.iter().all(|id| [w.cgroup.id, a.id, b.id].contains(id)),
        "only the watched subtree may appear: {cgroups:?}"
    );
    w.assert_nothing_lost();
}

/// A million checks natively; under software emulation, where each costs some twenty times more
/// (and a kretprobe far more), 200,000: enough to keep both CPUs in `cap_capable` at once for
/// seconds, within the VM stage's time. Exact wherever the kernel ran capwatch's programs every
/// time; under emulation on a preemptible kernel (7.2), the kernel skipped one run in 200,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_checks_from_two_cpus_are_counted_exactly_and_nothing_is_lost() {
    if !kernel_available("a_million_checks_from_two_cpus_are_counted_exactly_and_nothing_is_lost") {
        return;
    }
    let per_cpu: u64 = if emulated() { 100_000 } else { 500_000 };
    let mut w = Watched::new("million");
    // Two threads of the container's command, each on a CPU of its own where it can: half of
    // the checks before the key is known, in `CW_CAPS`, half after, in the key's slot.
    let half = (per_cpu / 2).to_string();
    let key = w.app(CAP_SETUID, Verdict::Granted, SYS_SETUID, SETID);
    for _ in 0..2 {
        let out = Launch::in_cgroup(&w.cgroup).run(&["threads", "2", "setuid", &half]);
        assert!(out.status.success(), "{out:?}");
        w.drain();
    }
    // Every check the kernel ran capwatch's program for is counted. A run the kernel skipped (the
    // program preempted on a CPU where another thread then checked) the kernel counts itself:
    // there, and only there, a check may be missing.
    let checks = w.checks(&w.cgroup, CAP_SETUID, SYS_SETUID);
    let skipped = w.monitor.probe().skipped_runs();
    let counted = checks.get(&key).copied().unwrap_or(0);
    let in_slot = w.monitor.counted_in_slot(&key).expect("slot read");
    eprintln!(
        "{counted} of {} checks counted, {in_slot} of {per_cpu} in the slot; {skipped} runs skipped",
        2 * per_cpu
    );
    assert!(checks.keys().all(|k| *k == key), "{checks:?} ({})", w.backend());
    assert!(counted <= 2 * per_cpu && counted + skipped >= 2 * per_cpu, "{counted} counted, {skipped} skipped");
    assert!(in_slot <= per_cpu && in_slot + skipped >= per_cpu, "{in_slot} in the slot, {skipped} skipped");
    w.assert_nothing_lost();
}

#[tokio::test]
async fn the_runtime_its_container_and_later_exec_sessions_are_told_apart() {
    if !kernel_available("the_runtime_its_container_and_later_exec_sessions_are_told_apart") {
        return;
    }
    let mut w = Watched::new("origin");
    // The runtime starts the container's command, whose child inherits its origin; the command
    // keeps running until its stdin closes.
    let mut command = std::process::Command::new(capwatch_tests::bin("cw-workload"));
    command.args(["child", "setuid", "10", "+", "wait-stdin"]).stdin(std::process::Stdio::piped());
    Launch::in_cgroup(&w.cgroup).as_runtime().apply(&mut command);
    let mut container = command.spawn().expect("the container's command");
    // While it runs, a second runtime process execs an operator's command: an exec session,
    // children included.
    let out = Launch::in_cgroup(&w.cgroup).as_runtime().run(&["child", "setuid", "20"]);
    assert!(out.status.success(), "{out:?}");
    drop(container.stdin.take());
    assert!(container.wait().expect("the command ends").success());
    // Once the command has ended, whatever the runtime starts there next is a command again.
    let out = Launch::in_cgroup(&w.cgroup).as_runtime().run(&["setuid", "5"]);
    assert!(out.status.success(), "{out:?}");
    w.drain();
    let setuid = |origin| w.key(&w.cgroup, CAP_SETUID, Verdict::Granted, SYS_SETUID, origin, SETID);
    assert_eq!(
        w.checks(&w.cgroup, CAP_SETUID, SYS_SETUID),
        // One setuid by each runtime process.
        BTreeMap::from([(setuid(Origin::Runtime), 3), (setuid(Origin::App), 10 + 5), (setuid(Origin::Exec), 20)]),
        "{}",
        w.backend()
    );
    w.assert_nothing_lost();
}

#[tokio::test]
async fn a_runtime_moved_in_after_it_started_and_re_executing_itself_stays_the_runtime() {
    if !kernel_available("a_runtime_moved_in_after_it_started_and_re_executing_itself_stays_the_runtime") {
        return;
    }
    use std::io::Write;
    let mut w = Watched::new("memfd");
    // As runc does: the runtime's init starts outside, its parent moves it into the cgroup, it
    // re-executes itself from a memfd copy and from its own binary, checking something each time,
    // then execs the container's command (another program file).
    let bin = capwatch_tests::bin("cw-workload");
    let command = capwatch_tests::tempdir("memfd").join("command");
    std::fs::copy(&bin, &command).expect("the container's command");
    let mut init = std::process::Command::new(&bin)
        .args(["await-line", "+", "memfd-exec", "setuid", "3", "+", "exec"])
        .arg(&bin)
        .args(["setuid", "2", "+", "exec"])
        .arg(&command)
        .args(["setuid", "7"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("the runtime's init");
    std::fs::write(w.cgroup.dir.join("cgroup.procs"), init.id().to_string()).expect("move it into the cgroup");
    init.stdin.take().expect("stdin").write_all(b"go\n").expect("let it go on");
    assert!(init.wait().expect("it ends").success());
    w.drain();
    let setuid = |origin| w.key(&w.cgroup, CAP_SETUID, Verdict::Granted, SYS_SETUID, origin, SETID);
    assert_eq!(
        w.checks(&w.cgroup, CAP_SETUID, SYS_SETUID),
        // Its own images are still the runtime; the command it execs is the container's.
        BTreeMap::from([(setuid(Origin::Runtime), 3 + 2), (setuid(Origin::App), 7)]),
        "{}",
        w.backend()
    );
    w.assert_nothing_lost();
}

#[tokio::test]
async fn a_command_written_again_into_its_own_cgroup_stays_the_container_s() {
    if !kernel_available("a_command_written_again_into_its_own_cgroup_stays_the_container_s") {
        return;
    }
    use std::io::Write;
    let mut w = Watched::new("rewritten");
    // As a service manager starts a service: its process writes itself into the cgroup, checks
    // something while it sets up and execs the service's program; then the manager writes the
    // same pid into the same cgroup again, as systemd does from the other side of the fork. The
    // program, and the child it starts, are still the container's.
    let mut command = std::process::Command::new(capwatch_tests::bin("cw-workload"));
    command.args(["await-line", "+", "setuid", "10", "+", "child", "setuid", "5"]).stdin(std::process::Stdio::piped());
    Launch::in_cgroup(&w.cgroup).as_runtime().apply(&mut command);
    let mut service = command.spawn().expect("the service's program");
    // Its first line of output would race the exec: wait until its program is the workload.
    let exe = capwatch_tests::bin("cw-workload").canonicalize().expect("cw-workload");
    let deadline = std::time::Instant::now() + capwatch_tests::patience(std::time::Duration::from_secs(10));
    while std::fs::read_link(format!("/proc/{}/exe", service.id())).ok() != Some(exe.clone()) {
        assert!(std::time::Instant::now() < deadline, "the service never exec'd its program");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::fs::write(w.cgroup.dir.join("cgroup.procs"), service.id().to_string()).expect("write it in again");
    service.stdin.take().expect("stdin").write_all(b"go\n").expect("let it go on");
    assert!(service.wait().expect("it ends").success());
    w.drain();
    let setuid = |origin| w.key(&w.cgroup, CAP_SETUID, Verdict::Granted, SYS_SETUID, origin, SETID);
    assert_eq!(
        w.checks(&w.cgroup, CAP_SETUID, SYS_SETUID),
        // The setuid of its setting up is the runtime's.
        BTreeMap::from([(setuid(Origin::Runtime), 1), (setuid(Origin::App), 10 + 5)]),
        "{}",
        w.backend()
    );
    w.assert_nothing_lost();
}

#[tokio::test]
async fn a_check_against_an_outer_user_namespace_is_marked_so() {
    if !kernel_available("a_check_against_an_outer_user_namespace_is_marked_so") {
        return;
    }
    let dir = capwatch_tests::tempdir("userns");
    let node = dir.join("null");
    let mut w = Watched::new("userns");
    // Root of its own user namespace, the process holds every capability there; making a
    // device node still needs CAP_MKNOD in the host's namespace.
    let out = Launch::in_cgroup(&w.cgroup).run(&["userns", "mknod", node.to_str().unwrap()]);
    assert!(refused(&out), "{out:?}");
    // The same on the host's namespace is granted and not marked.
    let out = Launch::in_cgroup(&w.cgroup).run(&["mknod", node.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    w.drain();
    let outer = w.app(CAP_MKNOD, Verdict::Denied, SYS_MKNODAT, OUTER_USERNS);
    let own = w.app(CAP_MKNOD, Verdict::Granted, SYS_MKNODAT, PLAIN);
    assert_eq!(w.checks(&w.cgroup, CAP_MKNOD, SYS_MKNODAT), BTreeMap::from([(outer, 1), (own, 1)]), "{}", w.backend());
    w.assert_nothing_lost();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_check_on_credentials_the_kernel_made_for_the_call_is_marked_foreign() {
    if !kernel_available("a_check_on_credentials_the_kernel_made_for_the_call_is_marked_foreign") {
        return;
    }
    let file = ProtectedFile::new("kernel-foreign");
    let mut w = Watched::new("foreign");
    // Root opens a mode-000 file on its own credentials: the kernel asks for CAP_DAC_READ_SEARCH
    // (a read), granted.
    let out = Launch::in_cgroup(&w.cgroup).run(&["open", file.path()]);
    assert!(out.status.success(), "{out:?}");
    // With its fsuid moved away from root, access(2) checks on credentials the kernel makes for
    // the call (the real ids, root's capabilities), not on the task's own.
    let out = Launch::in_cgroup(&w.cgroup).run(&["fsuid", "1000", "+", "access", file.path()]);
    assert!(out.status.success(), "{out:?}");
    w.drain();
    let own = w.app(CAP_DAC_READ_SEARCH, Verdict::Granted, SYS_OPENAT, PLAIN);
    assert_eq!(w.checks(&w.cgroup, CAP_DAC_READ_SEARCH, SYS_OPENAT), BTreeMap::from([(own, 1)]), "{}", w.backend());
    let foreign = w.app(CAP_DAC_READ_SEARCH, Verdict::Granted, SYS_ACCESS, FOREIGN_CRED);
    assert_eq!(w.checks(&w.cgroup, CAP_DAC_READ_SEARCH, SYS_ACCESS), BTreeMap::from([(foreign, 1)]), "{}", w.backend());
    w.assert_nothing_lost();
}

#[tokio::test]
async fn a_failure_carries_what_was_denied_in_the_same_call_and_nothing_older() {
    if !kernel_available("a_failure_carries_what_was_denied_in_the_same_call_and_nothing_older") {
        return;
    }
    let mut w = Watched::new("evidence");
    // setuid(0) as uid 0 without CAP_SETUID: denied, yet it succeeds. Then a call refused by
    // its own rules, then one refused for a missing capability, all by the same thread.
    let out = Launch::in_cgroup(&w.cgroup).dropping(&[CAP_SETUID, CAP_NET_RAW]).run(&[
        "setuid",
        "1",
        "+",
        "setpgid-foreign",
        "+",
        "raw-socket",
    ]);
    assert!(refused(&out), "{out:?}");
    w.drain();
    let denied = w.app(CAP_SETUID, Verdict::Denied, SYS_SETUID, SETID);
    assert_eq!(w.checks(&w.cgroup, CAP_SETUID, SYS_SETUID), BTreeMap::from([(denied, 1)]), "{}", w.backend());
    let setpgid = app_failure(&w.cgroup, libc::SYS_setpgid as u32, libc::EPERM, Seccomp::None, 0);
    let socket = app_failure(&w.cgroup, SYS_SOCKET, libc::EPERM, Seccomp::None, bit(CAP_NET_RAW));
    // The earlier denied setuid must not leak into setpgid's failure.
    assert_eq!(w.failures(), BTreeMap::from([(setpgid, 1), (socket, 1)]));
    w.assert_nothing_lost();
}

#[tokio::test]
async fn a_signal_handlers_return_is_no_failed_call() {
    if !kernel_available("a_signal_handlers_return_is_no_failed_call") {
        return;
    }
    let mut w = Watched::new("sigreturn");
    // rt_sigreturn returns the interrupted code's rax, here -EPERM and -EACCES: not a failure.
    let out = Launch::in_cgroup(&w.cgroup).run(&["signalled", "3"]);
    assert!(out.status.success(), "{out:?}");
    w.drain();
    assert_eq!(w.failures(), BTreeMap::new(), "{}", w.backend());
    w.assert_nothing_lost();
}

#[tokio::test]
async fn a_real_seccomp_filters_refusal_is_told_from_a_call_that_ran() {
    if !kernel_available("a_real_seccomp_filters_refusal_is_told_from_a_call_that_ran") {
        return;
    }
    let file = ProtectedFile::new("kernel-seccomp");
    let mut w = Watched::new("seccomp");
    let out = refused_chmod_then_open(&w.cgroup, &file);
    assert!(refused(&out), "{out:?}");
    w.drain();
    let failures = w.failures();
    let chmod: Vec<&FailKey> = failures
        .keys()
        .filter(|k| k.syscall == libc::SYS_chmod as u32 || k.syscall == libc::SYS_fchmodat as u32)
        .collect();
    assert_eq!(chmod.len(), 1, "{failures:#?}");
    assert_eq!((chmod[0].seccomp, chmod[0].denied, chmod[0].errno), (Seccomp::MayRefuse, 0, libc::EPERM as u16));
    let open: Vec<&FailKey> = failures.keys().filter(|k| k.syscall == SYS_OPENAT).collect();
    assert_eq!(open.len(), 1, "{failures:#?}");
    assert_eq!(open[0].seccomp, Seccomp::Allows, "the filter always allows openat: {:?}", open[0]);
    assert_eq!(open[0].denied, bit(CAP_DAC_OVERRIDE) | bit(CAP_DAC_READ_SEARCH), "{:?}", open[0]);
    w.assert_nothing_lost();
}

/// The syscalls a process makes are in its cgroup's set: those that return, and exit_group,
/// which never does; one its seccomp filter refused is not (it is a failure), while one that ran
/// and failed for want of a capability is.
#[tokio::test]
async fn the_syscalls_made_are_recorded_but_not_those_a_seccomp_filter_refused() {
    if !kernel_available("the_syscalls_made_are_recorded_but_not_those_a_seccomp_filter_refused") {
        return;
    }
    let file = ProtectedFile::new("kernel-calls");
    let mut w = Watched::new("calls");
    let out = refused_chmod_then_open(&w.cgroup, &file);
    assert!(refused(&out), "{out:?}");
    w.drain();
    let calls: Vec<_> = w.monitor.aggregates().calls().iter().filter(|(k, _)| k.cgroup_id == w.cgroup.id).collect();
    let app: Vec<_> = calls.iter().filter(|(k, _)| k.origin == Origin::App).collect();
    assert_eq!(app.len(), 1, "{}: one set for the application: {calls:?}", w.backend());
    let made = app[0].1;
    let has = |nr: i64| made.contains(nr as u32);
    assert!(
        has(libc::SYS_execve) && has(libc::SYS_prctl) && has(libc::SYS_openat),
        "{:?}",
        made.iter().collect::<Vec<_>>()
    );
    assert!(
        has(libc::SYS_exit_group),
        "exit_group never returns, yet it was made: {:?}",
        made.iter().collect::<Vec<_>>()
    );
    assert!(
        !has(libc::SYS_chmod) && !has(libc::SYS_fchmodat),
        "the filter refused chmod: {:?}",
        made.iter().collect::<Vec<_>>()
    );
    w.assert_nothing_lost();
}

/// Root holding CAP_FOWNER under a seccomp filter that refuses chmod: only the filter can refuse
/// its chmod of `file`. Then, under the same filter, an open the filter allows and the DAC
/// refuses (CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped).
fn refused_chmod_then_open(cgroup: &TestCgroup, file: &ProtectedFile) -> std::process::Output {
    Launch::in_cgroup(cgroup).dropping(&[CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH]).run(&[
        "seccomp-refuse",
        "chmod,fchmodat",
        "chmod",
        file.path(),
        "+",
        "open",
        file.path(),
    ])
}

/// Every private writable mapping makes the kernel ask for CAP_SYS_ADMIN with
/// `CAP_OPT_NOAUDIT` (`cap_vm_enough_memory`). Where the backend sees `opts`, each of those checks
/// is marked advisory; where it does not, none is claimed either way. The difference between
/// 1,000 mappings and none is exactly 1,000 checks, whatever the program's start-up does.
///
/// Where the kernel's compiler inlined `cap_capable` into `cap_vm_enough_memory` (both live in
/// security/commoncap.c; Debian's 6.1 and 6.12 builds do), fexit and kprobes on `cap_capable`
/// cannot see these checks: the self-test then attaches a program to `cap_vm_enough_memory`
/// itself, and the count is the same (`capwatch_tests::reaches` says where a hook must be).
#[tokio::test]
async fn a_thousand_mmaps_are_a_thousand_advisory_sys_admin_checks() {
    if !kernel_available("a_thousand_mmaps_are_a_thousand_advisory_sys_admin_checks") {
        return;
    }
    let mut counted = Vec::new();
    for n in ["0", "1000"] {
        let mut w = Watched::new("mmap");
        w.assert_sees(Kind::VmAccounting, "cap_vm_enough_memory");
        let backend = w.backend();
        let out = Launch::in_cgroup(&w.cgroup).run(&["mmap", n]);
        assert!(out.status.success(), "{out:?}");
        w.drain();
        let advisory = w.app(CAP_SYS_ADMIN, Verdict::Granted, SYS_MMAP, ADVISORY);
        let seen = w.checks(&w.cgroup, CAP_SYS_ADMIN, SYS_MMAP);
        assert!(
            seen.keys().all(|key| *key == advisory),
            "{backend}: every CAP_SYS_ADMIN check in mmap should be {advisory:?}: {seen:?}"
        );
        counted.push(seen.values().sum::<u64>());
        w.assert_nothing_lost();
    }
    assert_eq!(
        counted[1].checked_sub(counted[0]),
        Some(1000),
        "CAP_SYS_ADMIN checks in mmap for 0 and 1000 mappings: {counted:?}"
    );
}

/// capset(2) asks for CAP_SETPCAP every time, from `cap_capset` itself (`cap_inh_is_capped`),
/// whether or not the answer decides anything: one check per call, exactly, granted with the
/// capability and denied without it, and moot here (the inheritable set does not grow beyond
/// the permitted one: security/commoncap.c cap_capset), so that capset still succeeds without it.
#[tokio::test]
async fn every_capset_is_one_setpcap_check_in_capset() {
    if !kernel_available("every_capset_is_one_setpcap_check_in_capset") {
        return;
    }
    let mut w = Watched::new("capset");
    w.assert_sees(Kind::Capset, "cap_capset");
    let out = Launch::in_cgroup(&w.cgroup).run(&["capset", "100"]);
    assert!(out.status.success(), "{out:?}");
    let out = Launch::in_cgroup(&w.cgroup).dropping(&[CAP_SETPCAP]).run(&["capset", "40"]);
    assert!(out.status.success(), "a capset that keeps the sets needs no CAP_SETPCAP: {out:?}");
    w.drain();
    let moot = Made { opts: 0, judged: Moot::CapsetWithinPermitted.raw() << CAP_FLAG_MOOT_SHIFT };
    let granted = w.app(CAP_SETPCAP, Verdict::Granted, SYS_CAPSET, moot);
    let denied = w.app(CAP_SETPCAP, Verdict::Denied, SYS_CAPSET, moot);
    assert_eq!(
        w.checks(&w.cgroup, CAP_SETPCAP, SYS_CAPSET),
        BTreeMap::from([(granted, 100), (denied, 40)]),
        "{}",
        w.backend()
    );
    assert_eq!(w.failures(), BTreeMap::new(), "{}", w.backend());
    w.assert_nothing_lost();
}

/// A capset that narrows the permitted set keeps what it names without any check
/// (security/commoncap.c cap_capset: the new permitted set must lie within the old one): each
/// capability it keeps is recorded once per such capset, marked kept, beside the CAP_SETPCAP
/// check every capset makes. Where the capability was not granted, the capset fails with EPERM
/// and keeps nothing; a capset that narrows nothing keeps nothing either.
#[tokio::test]
async fn a_capset_narrowing_the_permitted_set_records_what_it_keeps() {
    if !kernel_available("a_capset_narrowing_the_permitted_set_records_what_it_keeps") {
        return;
    }
    let bind = u64::from(CAP_NET_BIND_SERVICE.index());
    let mut w = Watched::new("keep");
    w.assert_sees(Kind::Capset, "cap_capset");
    // Not a check: no `opts` to see, on any backend.
    let kept_key = CapKey {
        cgroup_id: w.cgroup.id,
        cap: CAP_NET_BIND_SERVICE.index().into(),
        syscall: SYS_CAPSET,
        verdict: Verdict::Granted,
        origin: Origin::App,
        flags: CAP_FLAG_KEPT,
    };
    for _ in 0..3 {
        let out = Launch::in_cgroup(&w.cgroup).run(&["keep", &bind.to_string()]);
        assert!(out.status.success(), "{out:?}");
    }
    let out = Launch::in_cgroup(&w.cgroup).run(&["capset", "5"]);
    assert!(out.status.success(), "{out:?}");
    w.drain();
    let all_kept: BTreeMap<CapKey, u64> = w
        .monitor
        .aggregates()
        .caps()
        .iter()
        .filter(|(k, _)| k.cgroup_id == w.cgroup.id && k.kept())
        .map(|(k, t)| (*k, t.count))
        .collect();
    assert_eq!(all_kept, BTreeMap::from([(kept_key, 3)]), "{}", w.backend());
    let setpcap: u64 = w.checks(&w.cgroup, CAP_SETPCAP, SYS_CAPSET).values().sum();
    assert_eq!(setpcap, 3 + 5, "{}: one CAP_SETPCAP check per capset", w.backend());

    // Not granted: the capset fails and keeps nothing.
    let out = Launch::in_cgroup(&w.cgroup).dropping(&[CAP_NET_BIND_SERVICE]).run(&["keep", &bind.to_string()]);
    assert!(refused(&out), "keeping a capability not held should fail: {out:?}");
    w.drain();
    let counted: u64 = w.monitor.aggregates().caps().get(&kept_key).map_or(0, |t| t.count);
    assert_eq!(counted, 3, "{}: a failed capset kept nothing", w.backend());
    let failure = app_failure(&w.cgroup, SYS_CAPSET, libc::EPERM, Seccomp::None, 0);
    assert_eq!(w.failures(), BTreeMap::from([(failure, 1)]), "{}", w.backend());
    w.assert_nothing_lost();
}

/// A mapping below vm.mmap_min_addr asks for CAP_SYS_RAWIO, from `cap_mmap_addr` itself: one
/// check per mapping; without the capability, the mapping fails with EPERM.
#[tokio::test]
async fn a_mapping_below_mmap_min_addr_is_one_sys_rawio_check_in_mmap() {
    if !kernel_available("a_mapping_below_mmap_min_addr_is_one_sys_rawio_check_in_mmap") {
        return;
    }
    let min: u64 = std::fs::read_to_string("/proc/sys/vm/mmap_min_addr")
        .expect("vm.mmap_min_addr")
        .trim()
        .parse()
        .expect("a number");
    assert!(min > 0, "vm.mmap_min_addr is 0 here, so no mapping is below it: set it (sysctl vm.mmap_min_addr=65536)");
    let mut w = Watched::new("mmaplow");
    w.assert_sees(Kind::LowMmap, "cap_mmap_addr");
    let out = Launch::in_cgroup(&w.cgroup).run(&["mmap-low", "100"]);
    assert!(out.status.success(), "{out:?}");
    let out = Launch::in_cgroup(&w.cgroup).dropping(&[CAP_SYS_RAWIO]).run(&["mmap-low", "1"]);
    assert!(refused(&out), "a mapping at 0 without CAP_SYS_RAWIO should fail: {out:?}");
    w.drain();
    let granted = w.app(CAP_SYS_RAWIO, Verdict::Granted, SYS_MMAP, PLAIN);
    let denied = w.app(CAP_SYS_RAWIO, Verdict::Denied, SYS_MMAP, PLAIN);
    assert_eq!(
        w.checks(&w.cgroup, CAP_SYS_RAWIO, SYS_MMAP),
        BTreeMap::from([(granted, 100), (denied, 1)]),
        "{}",
        w.backend()
    );
    let failure = app_failure(&w.cgroup, SYS_MMAP, libc::EPERM, Seccomp::None, bit(CAP_SYS_RAWIO));
    assert_eq!(w.failures(), BTreeMap::from([(failure, 1)]), "{}", w.backend());
    w.assert_nothing_lost();
}

/// A ptrace access check the capability LSM cannot settle by comparing the two processes'
/// capabilities asks for CAP_SYS_PTRACE (security/commoncap.c cap_ptrace_access_check): one
/// check per open of a child's /proc/PID/environ; without the capability, the open fails with
/// EACCES. (Newer kernels' mm_access then lets perfmon_capable() through instead, CAP_PERFMON or
/// CAP_SYS_ADMIN: they go too.)
#[tokio::test]
async fn a_ptrace_access_check_is_one_sys_ptrace_check() {
    if !kernel_available("a_ptrace_access_check_is_one_sys_ptrace_check") {
        return;
    }
    let mut w = Watched::new("ptrace");
    w.assert_sees(Kind::Ptrace, "cap_ptrace_access_check");
    let out = Launch::in_cgroup(&w.cgroup).run(&["ptrace-read", "100"]);
    assert!(out.status.success(), "{out:?}");
    let out =
        Launch::in_cgroup(&w.cgroup).dropping(&[CAP_SYS_PTRACE, CAP_PERFMON, CAP_SYS_ADMIN]).run(&["ptrace-read", "1"]);
    assert!(refused(&out), "without CAP_SYS_PTRACE the open should fail: {out:?}");
    w.drain();
    let granted = w.app(CAP_SYS_PTRACE, Verdict::Granted, SYS_OPENAT, PLAIN);
    let denied = w.app(CAP_SYS_PTRACE, Verdict::Denied, SYS_OPENAT, PLAIN);
    assert_eq!(
        w.checks(&w.cgroup, CAP_SYS_PTRACE, SYS_OPENAT),
        BTreeMap::from([(granted, 100), (denied, 1)]),
        "{}",
        w.backend()
    );
    let eacces: u64 = w
        .failures()
        .iter()
        .filter(|(k, _)| k.syscall == SYS_OPENAT && i32::from(k.errno) == libc::EACCES)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(eacces, 1, "{}: {:#?}", w.backend(), w.failures());
    w.assert_nothing_lost();
}
