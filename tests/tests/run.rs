//! `capwatch run -- CMD` as people run it: no daemon, the command's own output untouched, its
//! exit status passed on, a report judged as the daemon judges a container's (the same advice
//! for the same program), and nothing left behind. These need root and BPF; in CI they must run.

use std::{
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use capwatch::cgroup::Hierarchy;
use capwatch_tests::{
    bin, container_name, docker_available, kernel_available, tempdir, test_probe, tool_available, wait_stored,
};
use serde_json::Value;

/// `capwatch run ARGS -- CMD` with its report as JSON in a file: (output, report).
fn run(label: &str, options: &[&str], command: &[&str]) -> (Output, Value) {
    let report = tempdir(&format!("run-{label}")).join("report.json");
    let probe = test_probe().to_string();
    let mut args = vec!["run", "--probe", &probe, "--format", "json", "--output", report.to_str().unwrap()];
    args.extend_from_slice(options);
    args.push("--");
    args.extend_from_slice(command);
    let out = Command::new(bin("capwatch")).args(&args).output().expect("run capwatch");
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("no report from {args:?} ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let report: Value = serde_json::from_str(&text).expect("report JSON");
    // Nothing is left behind: its cgroup, its scratch store.
    let cgroup = report["container"]["cgroup"].as_str().expect("the run's cgroup");
    assert!(!Hierarchy::find().unwrap().dir(Path::new(cgroup)).exists(), "{cgroup} is left behind");
    let scratch = std::env::temp_dir().join(cgroup.trim_start_matches('/'));
    assert!(!scratch.exists(), "{} is left behind", scratch.display());
    (out, report)
}

fn advised(report: &Value) -> Vec<String> {
    report["cap_add"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect()
}

fn verdict(report: &Value, cap: &str) -> String {
    let found = report["capabilities"].as_array().unwrap().iter().find(|c| c["capability"] == cap);
    found.map_or(String::new(), |c| c["verdict"].as_str().unwrap().to_string())
}

const PING: [&str; 4] = ["busybox", "ping", "-c1", "127.0.0.1"];

#[test]
fn a_command_is_reported_with_no_daemon_and_its_output_untouched() {
    if !kernel_available("a_command_is_reported_with_no_daemon_and_its_output_untouched") {
        return;
    }
    let (out, report) = run("ping", &[], &PING);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 packets transmitted, 1 packets received"), "ping's own output: {stdout}");
    assert!(!stdout.contains("cap_add"), "the report stays off stdout: {stdout}");
    assert_eq!(advised(&report), ["NET_RAW"], "{report:#}");
    assert_eq!(report["container"]["runtime"], "command");
    assert_eq!(report["container"]["name"], "busybox");

    // With exactly the advice it works; without it, it fails and the report says what is missing.
    let (out, _) = run("ping-advised", &["--caps", "NET_RAW"], &PING);
    assert_eq!(out.status.code(), Some(0), "the advice suffices");
    let (out, report) = run("ping-without", &["--drop", "NET_RAW"], &PING);
    assert_ne!(out.status.code(), Some(0), "ping needs NET_RAW");
    assert_eq!(verdict(&report, "CAP_NET_RAW"), "missing", "{report:#}");
}

#[test]
fn debians_ping_runs_with_what_its_report_advises() {
    let test = "debians_ping_runs_with_what_its_report_advises";
    if !kernel_available(test) {
        return;
    }
    let Some(ping) = tool_available(test, "ping") else { return };
    let ping = ping.to_str().unwrap();
    let (out, report) = run("iputils", &[], &[ping, "-c1", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let advice = advised(&report);
    assert!(advice.contains(&"NET_RAW".to_string()), "{report:#}");
    let (out, _) = run("iputils-advised", &["--caps", &advice.join(",")], &[ping, "-c1", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(0), "{advice:?} suffices: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_user_holds_the_capabilities_asked_for_and_systemd_takes_the_drop_in() {
    let test = "a_user_holds_the_capabilities_asked_for_and_systemd_takes_the_drop_in";
    if !kernel_available(test) {
        return;
    }
    let (out, report) = run("user", &["--user", "daemon", "--caps", "NET_RAW"], &PING);
    assert_eq!(out.status.code(), Some(0), "a user pings with NET_RAW as an ambient capability");
    assert_eq!(advised(&report), ["NET_RAW"], "{report:#}");
    let (out, _) = run("user-without", &["--user", "daemon"], &PING);
    assert_ne!(out.status.code(), Some(0), "a user holds nothing without --caps");

    // The drop-in, as systemd reads it.
    let Some(analyze) = tool_available(test, "systemd-analyze") else { return };
    let dir = tempdir("run-systemd");
    let report = dir.join("drop-in.conf");
    let probe = test_probe().to_string();
    let out = Command::new(bin("capwatch"))
        .args(["run", "--probe", &probe, "--user", "daemon", "--caps", "NET_RAW", "--format", "systemd"])
        .args(["--output", report.to_str().unwrap(), "--"])
        .args(PING)
        .output()
        .unwrap();
    assert!(out.status.success());
    let drop_in = std::fs::read_to_string(&report).unwrap();
    for line in ["CapabilityBoundingSet=CAP_NET_RAW", "AmbientCapabilities=CAP_NET_RAW", "NoNewPrivileges=yes"] {
        assert!(drop_in.lines().any(|l| l == line), "{line} missing:\n{drop_in}");
    }
    let unit = dir.join("cw-ping.service");
    std::fs::write(&unit, format!("[Service]\nUser=daemon\nExecStart=/usr/bin/busybox ping -c1 127.0.0.1\n{drop_in}"))
        .unwrap();
    let out = Command::new(analyze).arg("verify").arg(&unit).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr.lines().filter(|l| l.contains("cw-ping.service")).collect();
    assert!(out.status.success() && complaints.is_empty(), "systemd-analyze verify: {stderr}");
}

#[test]
fn a_daemon_it_forks_is_covered_and_ctrl_c_still_prints_the_report() {
    if !kernel_available("a_daemon_it_forks_is_covered_and_ctrl_c_still_prints_the_report") {
        return;
    }
    // The command exits at once; the ping it left behind, in a session of its own, runs on.
    let (out, report) =
        run("daemon", &[], &["busybox", "sh", "-c", "busybox setsid busybox ping -c2 127.0.0.1 >/dev/null & exit 0"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(advised(&report), ["NET_RAW"], "the daemon's socket counts: {report:#}");

    // Ctrl-C, as a terminal sends it: SIGINT to the foreground process group.
    let dir = tempdir("run-interrupt");
    let report = dir.join("report.json");
    let probe = test_probe().to_string();
    let mut child = Command::new(bin("capwatch"))
        .args(["run", "--probe", &probe, "--format", "json", "--output", report.to_str().unwrap()])
        .args(["--", "busybox", "sh", "-c", "busybox ping -c1 127.0.0.1 >/dev/null; exec busybox sleep 60"])
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let cgroup = Hierarchy::find().unwrap().mount().join(format!("capwatch-run-{}", child.id()));
    // Once ping is done and the command sleeps (ping itself ends quietly on SIGINT).
    let sleeping = || {
        let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
        procs.lines().any(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == b"sleep"))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sleeping() {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "the command's status: killed by SIGINT");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(advised(&report), ["NET_RAW"], "{report:#}");
    assert!(!cgroup.exists(), "its cgroup is removed");
}

/// The same program run by `capwatch run` on the host and in a container under the daemon gets
/// the same advice: the runtime's setup is never the application's.
#[test]
fn the_same_program_gets_the_same_advice_as_in_a_container() {
    let Some(env) = docker_available("the_same_program_gets_the_same_advice_as_in_a_container") else { return };
    let state = tempdir("run-vs-daemon");
    let daemon = env.daemon(&state);
    let name = container_name("run-vs-daemon");
    let id = env.start(&["--name", &name], &PING[1..]);
    assert_eq!(env.wait(&id), 0);
    let in_container = wait_stored(&state, &name);
    drop(daemon);
    let (_, on_host) = run("vs-daemon", &[], &PING);
    assert_eq!(advised(&on_host), advised(&in_container), "host: {on_host:#}\ncontainer: {in_container:#}");
}

/// Programs of the host, each run as root: the advice is what the program needs, proven by
/// running it again with exactly the advice (it works) and without each advised capability (it
/// fails).
#[test]
fn host_programs_get_advice_that_runs_them_and_no_more() {
    if !kernel_available("host_programs_get_advice_that_runs_them_and_no_more") {
        return;
    }
    let dir = tempdir("run-programs");
    let file = dir.join("owned");
    std::fs::write(&file, "").unwrap();
    let file = file.to_str().unwrap();
    let node = dir.join("null");
    let mknod = format!("busybox rm -f {0} && busybox mknod {0} c 1 3", node.display());
    let cases: [(&str, Vec<&str>, &[&str]); 3] = [
        ("ping", PING.to_vec(), &["NET_RAW"]),
        ("chown", vec!["busybox", "chown", "65534", file], &["CHOWN"]),
        ("mknod", vec!["busybox", "sh", "-c", &mknod], &["MKNOD"]),
    ];
    for (label, command, expected) in cases {
        let (out, report) = run(label, &[], &command);
        assert_eq!(out.status.code(), Some(0), "{label}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(advised(&report), expected, "{label}: {report:#}");
        let caps = expected.join(",");
        let (out, _) = run(&format!("{label}-advised"), &["--caps", &caps], &command);
        assert_eq!(out.status.code(), Some(0), "{label} works with exactly {caps}");
        for cap in expected {
            let (out, _) = run(&format!("{label}-without"), &["--drop", cap], &command);
            assert_ne!(out.status.code(), Some(0), "{label} still works without {cap}");
        }
    }
}
