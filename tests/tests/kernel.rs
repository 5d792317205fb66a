//! capwatch's programs in the real kernel: real cgroups, capabilities really dropped, exact
//! counts. These need root and BPF; in CI they must run.

use caps::Capability::{CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_NET_RAW};
use capwatch::probe::{Backend, Probe};
use capwatch_common::{
    CapKey, FailKey, Moot, Origin, Seccomp, Totals, Verdict, CAP_FLAG_MOOT_SHIFT, CAP_FLAG_OUTER_USERNS,
};
use capwatch_tests::{kernel_available, refused, Launch, ProtectedFile, TestCgroup};

const SYS_SOCKET: u32 = libc::SYS_socket as u32;
const SYS_SETUID: u32 = libc::SYS_setuid as u32;
const SYS_OPENAT: u32 = libc::SYS_openat as u32;

fn cap(cgroup: &TestCgroup, cap: caps::Capability, verdict: Verdict, syscall: u32) -> CapKey {
    let flags = if (cap, syscall) == (caps::Capability::CAP_SETUID, SYS_SETUID) { SETUID_TO_ROOT_AS_ROOT } else { 0 };
    CapKey { cgroup_id: cgroup.id, cap: cap.index().into(), syscall, verdict, origin: Origin::App, flags }
}

/// cw-workload's setuid(0) as uid 0, with or without CAP_SETUID: the uid asked for is already the
/// real and saved one, so the kernel judges the check moot (kernel/sys.c __sys_setuid).
const SETUID_TO_ROOT_AS_ROOT: u32 = Moot::SetuidUnchanged.raw() << CAP_FLAG_MOOT_SHIFT;

fn count<K: Ord>(map: &std::collections::BTreeMap<K, Totals>, key: &K) -> u64 {
    map.get(key).map_or(0, |t| t.count)
}

#[tokio::test]
async fn setuid_as_root_makes_exactly_one_granted_check_per_call() {
    if !kernel_available("setuid_as_root_makes_exactly_one_granted_check_per_call") {
        return;
    }
    let cgroup = TestCgroup::new("setuid");
    let mut monitor = cgroup.monitor();
    let out = Launch::in_cgroup(&cgroup).run(&["setuid", "1000"]);
    assert!(out.status.success(), "{out:?}");
    monitor.drain().expect("drain");
    let caps = monitor.aggregates().caps();
    let key = cap(&cgroup, caps::Capability::CAP_SETUID, Verdict::Granted, SYS_SETUID);
    assert_eq!(count(caps, &key), 1000, "{caps:#?}");
    let sample = caps[&key].sample;
    assert_eq!(capwatch::names::comm(&sample.comm), "cw-workload");
    assert_eq!(sample.uid, 0);
    assert_eq!(
        capwatch::cgroup::Hierarchy::find().expect("cgroup2").path(cgroup.id).as_deref(),
        Some(cgroup.name.as_str())
    );
}

#[tokio::test]
async fn a_raw_socket_without_net_raw_is_a_denied_check_and_an_eperm() {
    if !kernel_available("a_raw_socket_without_net_raw_is_a_denied_check_and_an_eperm") {
        return;
    }
    let cgroup = TestCgroup::new("rawsock");
    let mut monitor = cgroup.monitor();
    let out = Launch::in_cgroup(&cgroup).dropping(&[CAP_NET_RAW]).run(&["raw-socket"]);
    assert!(refused(&out), "the raw socket should be refused: {out:?}");
    monitor.drain().expect("drain");
    let aggregates = monitor.aggregates();
    assert_eq!(
        count(aggregates.caps(), &cap(&cgroup, CAP_NET_RAW, Verdict::Denied, SYS_SOCKET)),
        1,
        "{:#?}",
        aggregates.caps()
    );
    assert_eq!(count(aggregates.caps(), &cap(&cgroup, CAP_NET_RAW, Verdict::Granted, SYS_SOCKET)), 0);
    let failure = FailKey {
        cgroup_id: cgroup.id,
        syscall: SYS_SOCKET,
        errno: libc::EPERM as u16,
        origin: Origin::App,
        uid: 0,
        seccomp: Seccomp::None,
        denied: 1 << 13,
    };
    assert_eq!(count(aggregates.failures(), &failure), 1, "{:#?}", aggregates.failures());

    // With the capability, the same call is a granted check and no failure.
    let out = Launch::in_cgroup(&cgroup).run(&["raw-socket"]);
    assert!(out.status.success(), "{out:?}");
    monitor.drain().expect("drain");
    let aggregates = monitor.aggregates();
    assert_eq!(count(aggregates.caps(), &cap(&cgroup, CAP_NET_RAW, Verdict::Granted, SYS_SOCKET)), 1);
    assert_eq!(count(aggregates.failures(), &failure), 1);
}

#[tokio::test]
async fn a_mode_000_file_without_dac_capabilities_is_two_denied_checks_and_an_eacces() {
    if !kernel_available("a_mode_000_file_without_dac_capabilities_is_two_denied_checks_and_an_eacces") {
        return;
    }
    let file = ProtectedFile::new("kernel-1");
    let cgroup = TestCgroup::new("dac");
    let mut monitor = cgroup.monitor();
    let out = Launch::in_cgroup(&cgroup).dropping(&[CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH]).run(&["open", file.path()]);
    assert!(refused(&out), "opening a mode-000 file should fail: {out:?}");
    monitor.drain().expect("drain");
    let aggregates = monitor.aggregates();
    for denied in [CAP_DAC_READ_SEARCH, CAP_DAC_OVERRIDE] {
        assert!(
            count(aggregates.caps(), &cap(&cgroup, denied, Verdict::Denied, SYS_OPENAT)) >= 1,
            "no denied {denied} in openat: {:#?}",
            aggregates.caps()
        );
    }
    let failure = FailKey {
        cgroup_id: cgroup.id,
        syscall: SYS_OPENAT,
        errno: libc::EACCES as u16,
        origin: Origin::App,
        uid: 0,
        seccomp: Seccomp::None,
        denied: 1 << 1 | 1 << 2,
    };
    assert_eq!(count(aggregates.failures(), &failure), 1, "{:#?}", aggregates.failures());
}

#[tokio::test]
async fn each_cgroup_sees_only_its_own_processes() {
    if !kernel_available("each_cgroup_sees_only_its_own_processes") {
        return;
    }
    let watched = TestCgroup::new("watched");
    let a = watched.child("a");
    let b = watched.child("b");
    let outside = TestCgroup::new("outside");
    let mut monitor = watched.monitor();

    for (cgroup, n) in [(&a, "300"), (&b, "700"), (&outside, "500")] {
        let out = Launch::in_cgroup(cgroup).run(&["setuid", n]);
        assert!(out.status.success(), "{out:?}");
    }
    monitor.drain().expect("drain");

    let setuid = |cgroup_id| CapKey {
        cgroup_id,
        cap: 7,
        syscall: SYS_SETUID,
        verdict: Verdict::Granted,
        origin: Origin::App,
        flags: SETUID_TO_ROOT_AS_ROOT,
    };
    let caps = monitor.aggregates().caps();
    assert_eq!(count(caps, &setuid(a.id)), 300);
    assert_eq!(count(caps, &setuid(b.id)), 700);
    assert!(!monitor.aggregates().cgroups().contains(&outside.id), "a cgroup outside the watched subtree was recorded");
    assert!(
        monitor.aggregates().cgroups().iter().all(|id| [watched.id, a.id, b.id].contains(id)),
        "only the watched subtree may appear: {:?}",
        monitor.aggregates().cgroups()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_checks_from_two_cpus_are_counted_exactly_and_nothing_is_lost() {
    if !kernel_available("a_million_checks_from_two_cpus_are_counted_exactly_and_nothing_is_lost") {
        return;
    }
    let cgroup = TestCgroup::new("million");
    let mut monitor = cgroup.monitor();
    // Two threads of the container's command, each on a CPU of its own where it can.
    let out = Launch::in_cgroup(&cgroup).run(&["threads", "2", "setuid", "500000"]);
    assert!(out.status.success(), "{out:?}");
    monitor.drain().expect("drain");
    let key = cap(&cgroup, caps::Capability::CAP_SETUID, Verdict::Granted, SYS_SETUID);
    assert_eq!(count(monitor.aggregates().caps(), &key), 1_000_000);
    assert!(monitor.aggregates().losses().iter().all(|&n| n == 0), "losses: {:?}", monitor.aggregates().losses());
}

#[tokio::test]
async fn the_runtime_its_container_and_later_exec_sessions_are_told_apart() {
    if !kernel_available("the_runtime_its_container_and_later_exec_sessions_are_told_apart") {
        return;
    }
    let cgroup = TestCgroup::new("origin");
    let mut monitor = cgroup.monitor();
    let setuid = |origin| CapKey {
        cgroup_id: cgroup.id,
        cap: 7,
        syscall: SYS_SETUID,
        verdict: Verdict::Granted,
        origin,
        flags: SETUID_TO_ROOT_AS_ROOT,
    };

    // The runtime starts the container's command, whose child inherits its origin; the command
    // keeps running until its stdin closes.
    let mut command = std::process::Command::new(capwatch_tests::bin("cw-workload"));
    command.args(["child", "setuid", "10", "+", "wait-stdin"]).stdin(std::process::Stdio::piped());
    Launch::in_cgroup(&cgroup).as_runtime().apply(&mut command);
    let mut container = command.spawn().expect("the container's command");
    // While it runs, a second runtime process execs an operator's command: an exec session,
    // children included.
    let out = Launch::in_cgroup(&cgroup).as_runtime().run(&["child", "setuid", "20"]);
    assert!(out.status.success(), "{out:?}");
    drop(container.stdin.take());
    assert!(container.wait().expect("the command ends").success());
    // Once the command has ended, whatever the runtime starts there next is a command again.
    let out = Launch::in_cgroup(&cgroup).as_runtime().run(&["setuid", "5"]);
    assert!(out.status.success(), "{out:?}");
    monitor.drain().expect("drain");

    let caps = monitor.aggregates().caps();
    assert_eq!(count(caps, &setuid(Origin::Runtime)), 3, "one setuid by each runtime process: {caps:#?}");
    assert_eq!(count(caps, &setuid(Origin::App)), 10 + 5, "{caps:#?}");
    assert_eq!(count(caps, &setuid(Origin::Exec)), 20, "{caps:#?}");
}

#[tokio::test]
async fn a_runtime_moved_in_after_it_started_and_re_executing_itself_stays_the_runtime() {
    if !kernel_available("a_runtime_moved_in_after_it_started_and_re_executing_itself_stays_the_runtime") {
        return;
    }
    use std::io::Write;
    let cgroup = TestCgroup::new("memfd");
    let mut monitor = cgroup.monitor();
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
    std::fs::write(cgroup.dir.join("cgroup.procs"), init.id().to_string()).expect("move it into the cgroup");
    init.stdin.take().expect("stdin").write_all(b"go\n").expect("let it go on");
    assert!(init.wait().expect("it ends").success());
    monitor.drain().expect("drain");
    let caps = monitor.aggregates().caps();
    let setuid = |origin| CapKey { origin, ..cap(&cgroup, caps::Capability::CAP_SETUID, Verdict::Granted, SYS_SETUID) };
    assert_eq!(count(caps, &setuid(Origin::Runtime)), 3 + 2, "its own images are still the runtime: {caps:#?}");
    assert_eq!(count(caps, &setuid(Origin::App)), 7, "the command it execs is the container's: {caps:#?}");
}

#[tokio::test]
async fn a_check_against_an_outer_user_namespace_is_marked_so() {
    if !kernel_available("a_check_against_an_outer_user_namespace_is_marked_so") {
        return;
    }
    let dir = capwatch_tests::tempdir("userns");
    let node = dir.join("null");
    let cgroup = TestCgroup::new("userns");
    let mut monitor = cgroup.monitor();
    // Root of its own user namespace, the process holds every capability there; making a
    // device node still needs CAP_MKNOD in the host's namespace.
    let out = Launch::in_cgroup(&cgroup).run(&["userns", "mknod", node.to_str().unwrap()]);
    assert!(refused(&out), "{out:?}");
    // The same on the host's namespace is granted and not marked.
    let out = Launch::in_cgroup(&cgroup).run(&["mknod", node.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    monitor.drain().expect("drain");
    let mknod: Vec<(&CapKey, &Totals)> = monitor.aggregates().caps().iter().filter(|(k, _)| k.cap == 27).collect();
    assert!(
        mknod.iter().any(|(k, _)| k.verdict == Verdict::Denied && k.flags & CAP_FLAG_OUTER_USERNS != 0),
        "the refused mknod should be marked outer-namespace: {mknod:#?}"
    );
    assert!(
        mknod.iter().any(|(k, _)| k.verdict == Verdict::Granted && k.flags & CAP_FLAG_OUTER_USERNS == 0),
        "the host's mknod is its own namespace's: {mknod:#?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_failure_carries_what_was_denied_in_the_same_call_and_nothing_older() {
    if !kernel_available("a_failure_carries_what_was_denied_in_the_same_call_and_nothing_older") {
        return;
    }
    let cgroup = TestCgroup::new("evidence");
    let mut monitor = cgroup.monitor();
    // setuid(0) as uid 0 without CAP_SETUID: denied, yet it succeeds. Then a call refused by
    // its own rules, then one refused for a missing capability, all by the same thread.
    let out = Launch::in_cgroup(&cgroup).dropping(&[caps::Capability::CAP_SETUID, CAP_NET_RAW]).run(&[
        "setuid",
        "1",
        "+",
        "setpgid-foreign",
        "+",
        "raw-socket",
    ]);
    assert!(refused(&out), "{out:?}");
    monitor.drain().expect("drain");
    let aggregates = monitor.aggregates();
    assert_eq!(count(aggregates.caps(), &cap(&cgroup, caps::Capability::CAP_SETUID, Verdict::Denied, SYS_SETUID)), 1);
    let failure = |syscall: i64| {
        let found: Vec<&FailKey> =
            aggregates.failures().keys().filter(|k| k.cgroup_id == cgroup.id && k.syscall == syscall as u32).collect();
        assert_eq!(found.len(), 1, "{:#?}", aggregates.failures());
        *found[0]
    };
    let setpgid = failure(libc::SYS_setpgid);
    assert_eq!(
        (setpgid.errno, setpgid.denied),
        (libc::EPERM as u16, 0),
        "the earlier denied setuid must not leak: {setpgid:?}"
    );
    let socket = failure(libc::SYS_socket);
    assert_eq!(socket.denied, 1 << 13, "{socket:?}");
    assert_eq!((socket.uid, socket.seccomp), (0, Seccomp::None));
}

#[tokio::test]
async fn a_real_seccomp_filters_refusal_is_told_from_a_call_that_ran() {
    if !kernel_available("a_real_seccomp_filters_refusal_is_told_from_a_call_that_ran") {
        return;
    }
    let file = ProtectedFile::new("kernel-2");
    let cgroup = TestCgroup::new("seccomp");
    let mut monitor = cgroup.monitor();
    // Root holding CAP_FOWNER: only the filter can refuse chmod. Then, under the same filter, an
    // open the filter allows and the DAC refuses.
    let out = Launch::in_cgroup(&cgroup).dropping(&[CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH]).run(&[
        "seccomp-refuse",
        "chmod,fchmodat",
        "chmod",
        file.path(),
        "+",
        "open",
        file.path(),
    ]);
    assert!(refused(&out), "{out:?}");
    monitor.drain().expect("drain");
    let failures: Vec<&FailKey> = monitor.aggregates().failures().keys().filter(|k| k.cgroup_id == cgroup.id).collect();
    let chmod: Vec<&&FailKey> = failures
        .iter()
        .filter(|k| k.syscall == libc::SYS_chmod as u32 || k.syscall == libc::SYS_fchmodat as u32)
        .collect();
    assert_eq!(chmod.len(), 1, "{failures:#?}");
    assert_eq!((chmod[0].seccomp, chmod[0].denied, chmod[0].errno), (Seccomp::MayRefuse, 0, libc::EPERM as u16));
    let open: Vec<&&FailKey> = failures.iter().filter(|k| k.syscall == SYS_OPENAT).collect();
    assert_eq!(open.len(), 1, "{failures:#?}");
    assert_eq!(open[0].seccomp, Seccomp::Allows, "the filter always allows openat: {:?}", open[0]);
    assert_eq!(open[0].denied, 1 << 1 | 1 << 2, "{:?}", open[0]);
}

#[test]
fn the_kprobe_backend_passes_the_verifier() {
    if !kernel_available("the_kprobe_backend_passes_the_verifier") {
        return;
    }
    Probe::verify(Backend::Kprobe).expect("kprobe programs load");
    Probe::verify(Backend::Tracepoint).expect("tracepoint program loads");
}
