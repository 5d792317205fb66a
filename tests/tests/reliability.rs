//! What a busy host throws at capwatch: maps and a ring buffer too small for what happens, a stack
//! map with no free slot, a second daemon on the same store, a store that cannot be written for
//! a while. Nothing may be lost uncounted, counted twice, or judged differently. These need root
//! and BPF; in CI they must run.

use std::{
    collections::BTreeMap,
    ffi::CString,
    fs,
    io::Write,
    os::unix::fs::{chown, PermissionsExt},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use caps::Capability::{CAP_DAC_READ_SEARCH, CAP_NET_RAW};
use capwatch::{
    cgroup::Hierarchy,
    monitor::Monitor,
    probe::{self, MapSizes},
};
use capwatch_common::{Loss, Verdict, JUDGED_ADVISORY_SITE, JUDGED_STACK_READ};
use capwatch_tests::{bin, capwatch, json, kernel_available, tempdir, test_probe, Launch, Running, TestCgroup};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_DAC_READ_SEARCH_NR: u32 = 2;
const SYS_MMAP: u32 = libc::SYS_mmap as u32;
const SYS_OPENAT: u32 = libc::SYS_openat as u32;

fn monitor(cgroup: &TestCgroup, maps: MapSizes) -> Monitor {
    let options = probe::Options {
        scope: cgroup.scope(),
        backend: test_probe().backend(),
        maps,
        syscall_sets: true,
        reads: probe::Reads::Casts,
    };
    Monitor::start(options, Hierarchy::find().expect("cgroup2")).expect("attach capwatch's probe")
}

fn lost(monitor: &Monitor, loss: Loss) -> u64 {
    monitor.aggregates().losses().get(loss.raw() as usize).copied().unwrap_or(0)
}

/// Every check and every failure the monitor counted.
fn counted(monitor: &Monitor) -> (u64, u64) {
    let aggregates = monitor.aggregates();
    (aggregates.caps().values().map(|t| t.count).sum(), aggregates.failures().values().map(|t| t.count).sum())
}

/// The same workload watched with the maps as built, for what was done.
async fn done(label: &str, dropping: &[caps::Capability], args: &[&str]) -> (u64, u64) {
    let cgroup = TestCgroup::new(label);
    let mut monitor = monitor(&cgroup, MapSizes::default());
    Launch::in_cgroup(&cgroup).dropping(dropping).run(args);
    monitor.drain().expect("drain");
    assert_eq!(monitor.aggregates().losses().iter().sum::<u64>(), 0, "nothing may be lost with room to spare");
    counted(&monitor)
}

#[tokio::test]
async fn a_full_check_map_counts_every_check_it_could_not_keep() {
    if !kernel_available("a_full_check_map_counts_every_check_it_could_not_keep") {
        return;
    }
    let workload = ["setuid", "300"];
    let cgroup = TestCgroup::new("capmap");
    let mut small = monitor(&cgroup, MapSizes { caps: 2, ..MapSizes::default() });
    Launch::in_cgroup(&cgroup).run(&workload);
    small.drain().expect("drain");
    let (kept, _) = counted(&small);
    let lost = lost(&small, Loss::CapMapFull);
    drop(small);
    let (checks, _) = done("capmap-all", &[], &workload).await;
    assert!(lost > 0, "two keys cannot hold this workload's checks");
    assert_eq!(kept + lost, checks, "kept {kept} + lost {lost} must be every check made");
}

#[tokio::test]
async fn a_full_failure_map_counts_every_failure_it_could_not_keep() {
    if !kernel_available("a_full_failure_map_counts_every_failure_it_could_not_keep") {
        return;
    }
    let workload = ["setpgid-foreign", "+", "raw-socket"];
    let cgroup = TestCgroup::new("failmap");
    let mut small = monitor(&cgroup, MapSizes { failures: 1, ..MapSizes::default() });
    Launch::in_cgroup(&cgroup).dropping(&[CAP_NET_RAW]).run(&workload);
    small.drain().expect("drain");
    let (_, kept) = counted(&small);
    let lost = lost(&small, Loss::FailureMapFull);
    drop(small);
    let (_, failures) = done("failmap-all", &[CAP_NET_RAW], &workload).await;
    assert!(lost > 0 && kept > 0, "one key holds one of two failing syscalls: kept {kept}, lost {lost}");
    assert_eq!(kept + lost, failures);
}

#[tokio::test]
async fn a_full_ring_buffer_loses_announcements_but_no_count() {
    if !kernel_available("a_full_ring_buffer_loses_announcements_but_no_count") {
        return;
    }
    let parent = TestCgroup::new("ringbuf");
    let children: Vec<TestCgroup> = (0..48).map(|i| parent.child(&format!("c{i}"))).collect();
    // One page holds a few dozen announcements; nothing reads it while the children run.
    let mut small = monitor(&parent, MapSizes { ringbuf_bytes: 4096, ..MapSizes::default() });
    for child in &children {
        assert!(Launch::in_cgroup(child).run(&["setuid", "3"]).status.success());
    }
    small.drain().expect("drain");
    assert!(lost(&small, Loss::RingbufFull) > 0, "48 cgroups' first occurrences cannot fit one page");
    let setuid = libc::SYS_setuid as u32;
    for child in &children {
        let count: u64 = small
            .aggregates()
            .caps()
            .iter()
            .filter(|(k, _)| k.cgroup_id == child.id && k.syscall == setuid)
            .map(|(_, t)| t.count)
            .sum();
        assert_eq!(count, 3, "the map still counts every check of {}", child.name);
    }
    drop(small);
    drop(children);
}

#[tokio::test]
async fn a_full_denied_stash_counts_the_evidence_it_could_not_keep() {
    if !kernel_available("a_full_denied_stash_counts_the_evidence_it_could_not_keep") {
        return;
    }
    // A FIFO in a directory that only CAP_DAC_OVERRIDE lets root search: opening it checks
    // CAP_DAC_READ_SEARCH (denied), then CAP_DAC_OVERRIDE, then waits for a writer, so both
    // readers hold a denied check in an unfinished syscall at once.
    let dir = tempdir("denied-fifo").join("private");
    fs::create_dir(&dir).expect("mkdir");
    let fifo = dir.join("fifo");
    let path = CString::new(fifo.to_str().expect("utf-8")).expect("path");
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o666) }, 0, "mkfifo");
    fs::set_permissions(&fifo, fs::Permissions::from_mode(0o666)).expect("chmod fifo");
    chown(&dir, Some(1000), Some(1000)).expect("chown");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod dir");

    let cgroup = TestCgroup::new("denied");
    let mut small = monitor(&cgroup, MapSizes { denied: 1, ..MapSizes::default() });
    let fifo_arg = fifo.to_str().expect("utf-8").to_string();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let mut command = Command::new(bin("cw-workload"));
            command.args(["open", &fifo_arg]).stdout(Stdio::null()).stderr(Stdio::null());
            Launch::in_cgroup(&cgroup).dropping(&[CAP_DAC_READ_SEARCH]).apply(&mut command);
            command.spawn().expect("a reader")
        })
        .collect();
    let both_waiting = Instant::now() + Duration::from_secs(10);
    while fs::read_to_string(cgroup.dir.join("cgroup.procs")).map(|p| p.lines().count()).unwrap_or(0) < 2
        || readers.iter().any(|r| !waiting_in_fifo(r.id()))
    {
        assert!(Instant::now() < both_waiting, "the readers never waited on the FIFO");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(fs::OpenOptions::new().write(true).open(&fifo).expect("the writer releases both readers"));
    for mut reader in readers {
        assert!(reader.wait().expect("a reader ends").success());
    }
    small.drain().expect("drain");
    let denied: u64 = small
        .aggregates()
        .caps()
        .iter()
        .filter(|(k, _)| k.cap == CAP_DAC_READ_SEARCH_NR && k.verdict == Verdict::Denied && k.syscall == SYS_OPENAT)
        .map(|(_, t)| t.count)
        .sum();
    assert_eq!(denied, 2, "both denied checks are counted");
    assert_eq!(lost(&small, Loss::DeniedStashFull), 1, "one stash slot for two waiting readers");
    let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o755));
}

/// Whether a process sleeps in openat (the FIFO's, waiting for a writer).
fn waiting_in_fifo(pid: u32) -> bool {
    let in_openat = fs::read_to_string(format!("/proc/{pid}/syscall"))
        .is_ok_and(|s| s.split_whitespace().next() == Some(&SYS_OPENAT.to_string()));
    let sleeping = fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('S')));
    in_openat && sleeping
}

#[tokio::test]
async fn a_stack_map_without_a_free_slot_changes_no_verdict() {
    if !kernel_available("a_stack_map_without_a_free_slot_changes_no_verdict") {
        return;
    }
    let cgroup = TestCgroup::new("stackmap");
    let mut small = monitor(&cgroup, MapSizes { stacks: 1, ..MapSizes::default() });
    assert!(Launch::in_cgroup(&cgroup).run(&["mmap", "200", "+", "setuid", "5", "+", "raw-socket"]).status.success());
    small.drain().expect("drain");
    let caps = small.aggregates().caps();
    assert!(caps.values().any(|t| t.stack_id < 0), "one slot cannot keep every first occurrence's stack: {caps:#?}");
    let mmap: Vec<_> = caps.iter().filter(|(k, _)| k.cap == CAP_SYS_ADMIN && k.syscall == SYS_MMAP).collect();
    // Where the backend's cap_capable sees the accounting's check at all (see kernel.rs).
    for (key, totals) in mmap {
        assert_eq!(
            totals.judged,
            JUDGED_STACK_READ | JUDGED_ADVISORY_SITE,
            "the accounting's check in mmap is advisory whether or not its stack was kept: {key:?} {totals:?}"
        );
    }
    let others: BTreeMap<_, _> = caps.iter().filter(|(k, _)| k.cap != CAP_SYS_ADMIN).collect();
    for (key, totals) in others {
        assert_eq!(totals.judged & JUDGED_ADVISORY_SITE, 0, "{key:?} is no advisory check");
    }
}

#[test]
fn a_second_daemon_on_the_same_store_refuses_and_the_first_goes_on() {
    if !kernel_available("a_second_daemon_on_the_same_store_refuses_and_the_first_goes_on") {
        return;
    }
    let state = tempdir("second-daemon");
    let state_dir = state.to_str().expect("utf-8");
    let cgroup = TestCgroup::new("second-daemon");
    let args = ["daemon", "--state-dir", state_dir, "--cgroup-root", &cgroup.name, "--docker-socket", "/nonexistent"];
    let mut first = Running::start(&args);
    first.wait_for("the first daemon's start", |l| json(l)["event"] == "started");
    let second = Command::new(bin("capwatch"))
        .args(args)
        .env("CAPWATCH_METRICS_LISTEN", "127.0.0.1:0")
        .env("CAPWATCH_CONFIG", "/dev/null")
        .output()
        .expect("run a second daemon");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("another capwatch daemon") && stderr.contains(&first.child.id().to_string()), "{stderr}");
    // The first still watches, and writes.
    let child = cgroup.child("work");
    let out = Launch::in_cgroup(&child).run(&["setuid", "7"]);
    assert!(out.status.success());
    first.wait_for("the first daemon's next observation", |l| json(l)["syscall"] == "setuid");
    let (code, _) = first.stop(libc::SIGTERM);
    assert_eq!(code, Some(0));
}

/// A daemon killed outright and started again over the same store, while the container keeps
/// running: every check drained before the kill and every one after is counted once, under the
/// container's name. (What happens while no daemon runs is not seen: the programs are not pinned.)
#[test]
fn a_daemon_killed_and_restarted_counts_each_check_once() {
    if !kernel_available("a_daemon_killed_and_restarted_counts_each_check_once") {
        return;
    }
    let state = tempdir("restart");
    let parent = TestCgroup::new("restart");
    let (container, id) = container_cgroup(&parent, 'e');
    let args = [
        "daemon",
        "--state-dir",
        state.to_str().expect("utf-8"),
        "--cgroup-root",
        &parent.name,
        "--docker-socket",
        "/nonexistent",
    ];
    // The container's command, running across the daemons: a shell that runs each burst when
    // told to, so that the bursts are the container's own (an exec from outside is a session).
    let workload = bin("cw-workload");
    let script = format!("while read burst; do {} as-user 1000 setuid-tries $burst; done", workload.display());
    let mut command = Command::new("sh");
    command.args(["-c", &script]).stdin(Stdio::piped());
    Launch::in_cgroup(&container).apply(&mut command);
    let mut resident = command.spawn().expect("start the container's command");
    let mut orders = resident.stdin.take().expect("its stdin");

    let mut total = 0;
    for (round, burst) in [("first", 100), ("second", 200), ("third", 300)] {
        let mut daemon = Running::start(&args);
        daemon.wait_for("the daemon's start", |l| json(l)["event"] == "started");
        writeln!(orders, "{burst}").expect("order a burst");
        total += burst;
        wait_until(&format!("the {round} burst is stored"), || reported_setuid(&state, &id) == Some(total));
        daemon.stop(libc::SIGKILL);
    }
    drop(orders);
    assert!(resident.wait().expect("the container's command").success());
    let (code, out, stderr) =
        capwatch(&["report", &id[..12], "--format", "json", "--state-dir", state.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(report["container"]["id"], id.as_str(), "{out}");
    assert_eq!(report["container"]["name"], &id[..12], "named from its cgroup as before: {out}");
    assert_eq!(reported_setuid(&state, &id), Some(600), "nothing lost, nothing counted twice");
    drop(container);
}

/// A state directory on a tmpfs of its own, which the test can fill or make read-only.
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    fn new(label: &str) -> Self {
        let dir = tempdir(label);
        let status =
            Command::new("mount").args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"]).arg(&dir).status().expect("mount");
        assert!(status.success(), "mount a tmpfs on {}", dir.display());
        Self { dir }
    }

    /// Fills what space is left.
    fn fill(&self) {
        let filler = self.dir.join("filler");
        let _ =
            Command::new("dd").arg("if=/dev/zero").arg(format!("of={}", filler.display())).args(["bs=64k"]).output();
    }

    fn free(&self) {
        fs::remove_file(self.dir.join("filler")).expect("remove the filler");
    }

    fn remount(&self, mode: &str) {
        let status =
            Command::new("mount").args(["-o", &format!("remount,{mode}")]).arg(&self.dir).status().expect("remount");
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A cgroup that a container runtime could have made (`docker-<id>.scope`), so that the daemon
/// names it a container and `capwatch report` finds it by its id.
fn container_cgroup(parent: &TestCgroup, digit: char) -> (TestCgroup, String) {
    let id: String = std::iter::repeat_n(digit, 64).collect();
    (parent.child(&format!("docker-{id}.scope")), id)
}

/// The count of denied setuid checks `capwatch report` gives for the container.
fn reported_setuid(state: &Path, id: &str) -> Option<u64> {
    let (code, out, _) = capwatch(&["report", id, "--format", "json", "--state-dir", state.to_str()?]);
    (code == Some(0)).then_some(())?;
    let report: serde_json::Value = serde_json::from_str(&out).ok()?;
    report["capabilities"].as_array()?.iter().find(|c| c["capability"] == "CAP_SETUID")?["denied"]["count"].as_u64()
}

/// setuid(0) `n` times as uid 1000: each a denied CAP_SETUID check (and a failure).
fn denied_setuid(n: &str) -> [&str; 4] {
    ["as-user", "1000", "setuid-tries", n]
}

fn store_outage(label: &str, cause: impl Fn(&SmallDisk), cure: impl Fn(&SmallDisk)) {
    let disk = SmallDisk::new(label);
    let parent = TestCgroup::new(label);
    let (container, id) = container_cgroup(&parent, 'c');
    let args = [
        "daemon",
        "--state-dir",
        disk.dir.to_str().expect("utf-8"),
        "--cgroup-root",
        &parent.name,
        "--docker-socket",
        "/nonexistent",
    ];
    let mut daemon = Running::start(&args);
    daemon.wait_for("the daemon's start", |l| json(l)["event"] == "started");
    assert!(Launch::in_cgroup(&container).run(&denied_setuid("100")).status.success());
    wait_until("the first burst is stored", || reported_setuid(&disk.dir, &id) == Some(100));

    cause(&disk);
    assert!(Launch::in_cgroup(&container).run(&denied_setuid("200")).status.success());
    daemon.wait_for("the store's outage said once", |l| json(l)["event"] == "store_unwritable");
    assert_eq!(reported_setuid(&disk.dir, &id), Some(100), "what was written stays readable and intact");

    cure(&disk);
    daemon.wait_for("the store writable again", |l| json(l)["event"] == "store_writable");
    wait_until("everything kept meanwhile is stored", || reported_setuid(&disk.dir, &id) == Some(300));
    let (code, lines) = daemon.stop(libc::SIGTERM);
    assert_eq!(code, Some(0));
    assert_eq!(lines.iter().filter(|l| json(l)["event"] == "store_unwritable").count(), 1, "said once per outage");
    assert_eq!(reported_setuid(&disk.dir, &id), Some(300), "nothing counted twice");
    drop(container);
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_full_disk_loses_nothing_and_the_store_catches_up() {
    if !kernel_available("a_full_disk_loses_nothing_and_the_store_catches_up") {
        return;
    }
    store_outage("full-disk", SmallDisk::fill, SmallDisk::free);
}

/// A filesystem cannot be made read-only while a daemon holds its store open for writing (the
/// kernel refuses the remount: fs/namespace.c sb_prepare_remount_readonly), so a read-only state
/// directory meets the daemon at its start: one line, a non-zero exit, the store kept readable
/// and intact, and a later start on the writable directory goes on from it.
#[test]
fn a_read_only_state_directory_is_one_line_and_keeps_the_store() {
    if !kernel_available("a_read_only_state_directory_is_one_line_and_keeps_the_store") {
        return;
    }
    let disk = SmallDisk::new("read-only");
    let parent = TestCgroup::new("read-only");
    let (container, id) = container_cgroup(&parent, 'd');
    let dir = disk.dir.to_str().expect("utf-8");
    let args = ["daemon", "--state-dir", dir, "--cgroup-root", &parent.name, "--docker-socket", "/nonexistent"];
    let watch = |burst: &str, total: u64| {
        let mut daemon = Running::start(&args);
        daemon.wait_for("the daemon's start", |l| json(l)["event"] == "started");
        assert!(Launch::in_cgroup(&container).run(&denied_setuid(burst)).status.success());
        wait_until("the burst is stored", || reported_setuid(&disk.dir, &id) == Some(total));
        let (code, _) = daemon.stop(libc::SIGTERM);
        assert_eq!(code, Some(0));
    };
    watch("100", 100);

    disk.remount("ro");
    let refused = Command::new(bin("capwatch"))
        .args(args)
        .env("CAPWATCH_METRICS_LISTEN", "127.0.0.1:0")
        .env("CAPWATCH_CONFIG", "/dev/null")
        .output()
        .expect("run the daemon");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot be used now") && stderr.contains("make it writable"), "{stderr}");
    assert_eq!(reported_setuid(&disk.dir, &id), Some(100), "the store stays readable and intact");

    disk.remount("rw");
    watch("200", 300);
    drop(container);
}
