//! systemd's services as the daemon sees them: a cgroup named as systemd names a unit's
//! (`…/NAME.service`) is a unit, listed and reported like a container, with what its process
//! holds, and its least privilege as a drop-in that, applied, still runs it. These need root and
//! BPF; in CI they must run.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use capwatch_tests::{
    bin, capwatch, in_ci, kernel_available, patience, tempdir, test_probe, tool_available, Launch, Running, TestCgroup,
};
use serde_json::Value;

#[test]
fn a_service_cgroup_is_a_unit_reported_with_its_drop_in() {
    if !kernel_available("a_service_cgroup_is_a_unit_reported_with_its_drop_in") {
        return;
    }
    let slice = TestCgroup::new("system.slice");
    let unit = slice.child("cw-ping.service");
    let state = tempdir("units");
    let state_dir = state.to_str().unwrap();
    let mut daemon = Running::start(&["daemon", "--state-dir", state_dir, "--cgroup-root", &slice.name]);
    daemon.wait_for_start();

    // Started as a service manager starts one: a process moved into the unit's cgroup sets it up,
    // then execs the service's program, which lives a while.
    let mut command = Command::new("busybox");
    command.args(["sh", "-c", "busybox ping -c1 127.0.0.1 >/dev/null && busybox sleep 1"]);
    Launch::in_cgroup(&unit).as_runtime().apply(&mut command);
    assert!(command.status().unwrap().success());

    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let (code, out, _) = capwatch(&["report", "cw-ping.service", "--format", "json", "--state-dir", state_dir]);
        if code == Some(0) {
            let report: Value = serde_json::from_str(&out).unwrap();
            if report["cap_add"].as_array().is_some_and(|a| !a.is_empty()) {
                break report;
            }
        }
        assert!(Instant::now() < deadline, "the unit was never reported; daemon: {}", daemon.said());
        std::thread::sleep(Duration::from_millis(250));
    };
    daemon.stop(libc::SIGTERM);
    assert_eq!(report["container"]["runtime"], "systemd", "{report:#}");
    assert_eq!(report["container"]["cgroup"], unit.name.as_str());
    assert_eq!(report["container"]["granted"]["user"], "root", "read from its process");
    assert_eq!(report["cap_add"], serde_json::json!(["NET_RAW"]), "{report:#}");

    let (_, ps, _) = capwatch(&["ps", "--all", "--state-dir", state_dir]);
    assert!(ps.lines().any(|l| l.contains("cw-ping.service") && l.contains("systemd")), "{ps}");
    let (code, drop_in, err) =
        capwatch(&["report", "cw-ping.service", "--format", "systemd", "--state-dir", state_dir]);
    assert_eq!(code, Some(0), "{err}");
    assert!(drop_in.lines().any(|l| l == "CapabilityBoundingSet=CAP_NET_RAW"), "{drop_in}");
    assert!(!drop_in.contains("AmbientCapabilities"), "root holds its bounding set:\n{drop_in}");
    assert!(drop_in.lines().any(|l| l == "NoNewPrivileges=yes"), "{drop_in}");

    // Applied, it still runs the service: the bounding set it sets, with root's other settings.
    let probe = test_probe().to_string();
    let out = Command::new(bin("capwatch"))
        .args(["run", "--probe", &probe, "--caps", "NET_RAW", "--output", "/dev/null", "--"])
        .args(["busybox", "ping", "-c1", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A real systemd: the corpus's Debian root filesystem booted read-only with systemd-nspawn, its
/// systemd as PID 1 in a cgroup below the daemon's root. A service started with systemd's
/// defaults (root, every capability) is reported; its drop-in, applied on the next boot, still
/// starts it, and its processes hold only what capwatch advised.
#[test]
fn a_real_services_drop_in_narrows_it_without_breaking_it() {
    let test = "a_real_services_drop_in_narrows_it_without_breaking_it";
    if !kernel_available(test) {
        return;
    }
    let Some(nspawn) = tool_available(test, "systemd-nspawn") else { return };
    let rootfs = match std::env::var("CAPWATCH_SYSTEMD_ROOTFS") {
        Ok(dir) if Path::new(&dir).join("sbin/init").exists() => dir,
        _ if in_ci() => {
            panic!("{test}: cannot run in CI: no root filesystem with systemd (`cargo xtask test` unpacks one)")
        }
        _ => {
            eprintln!("SKIPPED {test}: no root filesystem with systemd (`cargo xtask test` unpacks one)");
            return;
        }
    };
    let host = TestCgroup::new("nspawn");
    let state = tempdir("systemd");
    let state_dir = state.to_str().unwrap();
    let mut daemon = Running::start(&["daemon", "--state-dir", state_dir, "--cgroup-root", &host.name]);
    daemon.wait_for_start();

    let dir = tempdir("systemd-unit");
    let unit = dir.join("cw-ping.service");
    std::fs::write(
        &unit,
        "[Unit]\nDescription=capwatch's test service\n[Service]\nExecStart=/bin/sh -c '/usr/bin/ping -c1 127.0.0.1 && exec /bin/sleep 600'\n",
    )
    .unwrap();
    let boot = |binds: &[(&Path, &str)]| {
        let mut command = Command::new(&nspawn);
        command.args(["-D", &rootfs, "--boot", "--register=no", "--keep-unit", "--quiet", "--volatile=overlay"]);
        for (from, to) in [(unit.as_path(), "/etc/systemd/system/cw-ping.service")].iter().chain(binds) {
            command.arg(format!("--bind-ro={}:{to}", from.display()));
        }
        command.arg("systemd.wants=cw-ping.service");
        let log = std::fs::File::create(dir.join("console.log")).unwrap();
        command.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        Launch::in_cgroup(&host).apply(&mut command);
        command.spawn().expect("systemd-nspawn")
    };
    let console = || std::fs::read_to_string(dir.join("console.log")).unwrap_or_default();

    let mut first = boot(&[]);
    let deadline = Instant::now() + patience(Duration::from_secs(120));
    let advice = loop {
        let (code, out, err) = capwatch(&["report", "cw-ping.service", "--format", "json", "--state-dir", state_dir]);
        let report: Option<Value> = (code == Some(0)).then(|| serde_json::from_str(&out).unwrap());
        if let Some(report) = report.filter(|r| r["cap_add"].as_array().is_some_and(|a| !a.is_empty())) {
            break report;
        }
        if Instant::now() > deadline {
            let (_, ps, _) = capwatch(&["ps", "--all", "--state-dir", state_dir]);
            let units = Command::new("find").arg(&host.dir).args(["-name", "*.service"]).output();
            let units = units.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
            panic!(
                "the service was never reported: report exited {code:?}: {out}{err}\nps:\n{ps}\nunits' cgroups:\n{units}\n\
                 daemon: {}\nconsole:\n{}",
                daemon.said(),
                console()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let (code, drop_in, err) =
        capwatch(&["report", "cw-ping.service", "--format", "systemd", "--state-dir", state_dir]);
    assert_eq!(code, Some(0), "{err}");
    let before = service_bounding_set(&host);
    halt(&mut first, &host);
    daemon.stop(libc::SIGTERM);
    assert_eq!(advice["container"]["runtime"], "systemd", "{advice:#}");
    let advised: u64 = advice["cap_add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| capwatch::names::capability_number(&format!("CAP_{}", c.as_str().unwrap())).unwrap())
        .fold(0, |mask, cap| mask | 1 << cap);
    assert!(advised & 1 << 13 != 0, "ping needs NET_RAW: {advice:#}");

    let conf = dir.join("capwatch.conf");
    std::fs::write(&conf, &drop_in).unwrap();
    let mut second = boot(&[(conf.as_path(), "/etc/systemd/system/cw-ping.service.d/capwatch.conf")]);
    let deadline = Instant::now() + patience(Duration::from_secs(120));
    let after = loop {
        // Once ping succeeded, the service execs sleep.
        if let Some(bounding) = service_bounding_set(&host) {
            break bounding;
        }
        assert!(
            Instant::now() < deadline,
            "the narrowed service never ran past ping; drop-in:\n{drop_in}\nconsole:\n{}",
            console()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    halt(&mut second, &host);
    eprintln!("bounding set {before:x?} with systemd's defaults, {after:x} with the drop-in:\n{drop_in}");
    assert_eq!(after, advised, "the service holds what was advised: {after:x} for {advised:x}; drop-in:\n{drop_in}");
    assert!(before.is_some_and(|b| b & !advised != 0), "the drop-in narrowed it: {before:x?} to {after:x}");
}

/// The bounding set of the service's `sleep`, which it runs once ping succeeded.
fn service_bounding_set(host: &TestCgroup) -> Option<u64> {
    let procs = std::fs::read_to_string(host.dir.join("payload/system.slice/cw-ping.service/cgroup.procs")).ok()?;
    procs.lines().find_map(|pid| {
        let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).ok()?;
        let name = status.lines().find_map(|l| l.strip_prefix("Name:"))?.trim();
        (name == "sleep").then_some(())?;
        let bounding = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?.trim();
        u64::from_str_radix(bounding, 16).ok()
    })
}

/// Halts the booted systemd (SIGTERM to nspawn halts it), or kills what is left, and removes
/// the cgroups it made below `host`.
fn halt(nspawn: &mut Child, host: &TestCgroup) {
    unsafe { libc::kill(nspawn.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while nspawn.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = std::fs::write(host.dir.join("cgroup.kill"), "1");
            let _ = nspawn.kill();
            let _ = nspawn.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    remove_below(&host.dir);
}

/// Removes every cgroup below `dir`, the deepest first.
fn remove_below(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_below(&entry.path());
            for _ in 0..50 {
                if std::fs::remove_dir(entry.path()).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
