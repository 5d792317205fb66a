//! systemd's services as the daemon sees them: a cgroup named as systemd names a unit's
//! (`…/NAME.service`) is a unit, listed and reported like a container, with what its process
//! holds, and its least privilege as a drop-in that, applied, still runs it. These need root and
//! BPF; in CI they must run.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use capwatch_tests::{bin, capwatch, kernel_available, tempdir, test_probe, Launch, Running, TestCgroup};
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
        assert!(Instant::now() < deadline, "the unit was never reported");
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
