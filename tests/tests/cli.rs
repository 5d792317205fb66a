//! The `capwatch` binary as users run it: the daemon's NDJSON lines, `trace`, and the one-line
//! errors for what it cannot do. These need root and BPF; in CI they must run.

use std::process::Command;

use caps::Capability::CAP_NET_RAW;
use capwatch_tests::{bin, json, kernel_available, refused, tempdir, test_backend, Launch, Running, TestCgroup};
use serde_json::Value;

#[test]
fn the_daemon_logs_each_new_observation_as_a_json_line() {
    if !kernel_available("the_daemon_logs_each_new_observation_as_a_json_line") {
        return;
    }
    // The daemon watches the cgroups below its root, as it watches those below /docker.
    let parent = TestCgroup::new("daemon");
    let cgroup = parent.child("container");
    let state = tempdir("daemon-state");
    let mut daemon = Running::start(&["daemon", "--state-dir", state.to_str().unwrap(), "--cgroup-root", &parent.name]);
    let started = daemon.wait_for_start();
    assert_eq!(started["backend"], test_backend().name());

    let out = Launch::in_cgroup(&cgroup).dropping(&[CAP_NET_RAW]).run(&["raw-socket"]);
    assert!(refused(&out), "{out:?}");
    let check = json(&daemon.wait_for("a denied CAP_NET_RAW check", |l| {
        let v = json(l);
        v["event"] == "capability_check" && v["capability"] == "CAP_NET_RAW"
    }));
    assert_eq!(check["verdict"], "denied");
    assert_eq!(check["syscall"], "socket");
    assert_eq!(check["syscall_nr"], libc::SYS_socket);
    assert_eq!(check["cgroup"], cgroup.name.as_str());
    assert_eq!(check["cgroup_id"], cgroup.id);
    assert_eq!(check["comm"], "cw-workload");
    assert_eq!(check["uid"], 0);
    assert_eq!(check["count"], 1);
    let failure = json(&daemon.wait_for("socket failing with EPERM", |l| {
        let v = json(l);
        v["event"] == "syscall_failure" && v["syscall"] == "socket"
    }));
    assert_eq!(failure["errno"], "EPERM");
    assert_eq!(failure["cgroup"], cgroup.name.as_str());

    let status: Value = serde_json::from_str(&std::fs::read_to_string(state.join("status.json")).expect("status.json"))
        .expect("status JSON");
    assert_eq!(status["backend"], test_backend().name());

    let (code, lines) = daemon.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "the daemon should stop cleanly on SIGTERM");
    for line in &lines {
        let v = json(line);
        assert!(
            v["timestamp"].is_string() && v["event"].is_string(),
            "every line has a timestamp and an event: {line}"
        );
    }
    assert!(lines.iter().any(|l| json(l)["event"] == "stopped"));
    // Nothing outside the watched subtree is reported.
    assert!(lines
        .iter()
        .map(|l| json(l))
        .filter(|v| v["cgroup"].is_string())
        .all(|v| v["cgroup"].as_str().unwrap().starts_with(&cgroup.name)));
    let _ = std::fs::remove_dir_all(state);
}

#[test]
fn trace_prints_observations_and_the_totals_on_ctrl_c() {
    if !kernel_available("trace_prints_observations_and_the_totals_on_ctrl_c") {
        return;
    }
    let cgroup = TestCgroup::new("trace");
    let mut trace = Running::start(&["trace", "--cgroup", &cgroup.name]);
    let banner = trace.first_stderr_line();
    assert!(banner.contains("tracing") && banner.contains(&format!("with the {} probe", test_backend())), "{banner}");
    let out = Launch::in_cgroup(&cgroup).run(&["setuid", "250"]);
    assert!(out.status.success(), "{out:?}");
    let line = trace.wait_for("the setuid check", |l| l.contains("CAP_SETUID granted in setuid"));
    assert!(line.contains(&cgroup.name) && line.contains("cw-workload"), "{line}");
    let (code, lines) = trace.stop(libc::SIGINT);
    assert_eq!(code, Some(0));
    assert!(
        lines.iter().any(|l| l.contains("CAP_SETUID granted")
            && l.contains("setuid")
            && l.split_whitespace().any(|w| w == "250")),
        "the totals should show 250 setuid checks:\n{}",
        lines.join("\n")
    );
    assert!(lines.iter().any(|l| l == "lost: nothing"), "{}", lines.join("\n"));
}

#[test]
fn without_root_capwatch_says_so_in_one_line() {
    if !kernel_available("without_root_capwatch_says_so_in_one_line") {
        return;
    }
    let state = tempdir("nonroot-state");
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    let mut command = Command::new(bin("capwatch"));
    command.args(["daemon", "--state-dir", state.to_str().unwrap()]);
    Launch::default().as_user(65534).apply(&mut command);
    let out = command.output().expect("run capwatch as nobody");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
    let _ = std::fs::remove_dir_all(state);
}

#[test]
fn an_unknown_cgroup_root_is_a_clear_error() {
    let out = Command::new(bin("capwatch"))
        .args(["daemon", "--state-dir", tempdir("badroot").to_str().unwrap(), "--cgroup-root", "/no/such/cgroup"])
        .output()
        .expect("run capwatch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/no/such/cgroup") && stderr.contains("not a cgroup"), "{stderr}");
}

/// Every subcommand, given missing, malformed or hostile arguments, says what is wrong in one
/// line and exits non-zero: never a panic, a backtrace or clap's multi-line usage.
#[test]
fn bad_input_everywhere_is_one_line_and_a_non_zero_exit() {
    use std::{ffi::OsString, os::unix::ffi::OsStringExt, process::Command};

    let state = tempdir("bad-input");
    let state_dir = state.to_str().unwrap().to_string();
    let not_a_dir = state.join("file");
    std::fs::write(&not_a_dir, "not a state directory").unwrap();
    // The longest argument exec takes (MAX_ARG_STRLEN, 128 KiB): a 10 MB one never reaches a program.
    let huge = "a".repeat(128 * 1024 - 1);
    let strings: Vec<Vec<String>> = vec![
        vec!["report".into()],
        vec!["report".into(), "../../etc/passwd".into(), "--state-dir".into(), "/etc".into()],
        vec!["report".into(), huge.clone(), "--state-dir".into(), state_dir.clone()],
        vec!["report".into(), "x".into(), "--format".into(), "xml".into()],
        vec!["explain".into(), "x".into(), "--state-dir".into(), not_a_dir.display().to_string()],
        vec!["caps".into()],
        vec!["caps".into(), "decode".into(), "zz".into()],
        vec!["caps".into(), "decode".into(), huge],
        vec!["ps".into(), "--state-dir".into(), not_a_dir.display().to_string()],
        vec!["status".into(), "--state-dir".into(), "/nonexistent/capwatch".into()],
        vec!["config".into(), "show".into(), "--config".into(), "/nonexistent.toml".into()],
        vec!["config".into(), "show".into(), "--ringbuf-bytes".into(), "1000".into()],
        vec!["trace".into(), "--cgroup".into(), "/no/such/cgroup".into()],
        vec!["daemon".into(), "--probe".into(), "ebpf".into()],
        vec!["no-such-command".into()],
    ];
    let mut cases: Vec<Vec<OsString>> =
        strings.into_iter().map(|args| args.into_iter().map(OsString::from).collect()).collect();
    cases.push(vec!["report".into(), OsString::from_vec(vec![b'w', 0xff, 0xfe, b'b'])]);
    for args in cases {
        let out = Command::new(bin("capwatch")).args(&args).output().expect("run capwatch");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let shown: Vec<String> = args.iter().map(|a| a.to_string_lossy().chars().take(40).collect()).collect();
        assert!(!out.status.success(), "{shown:?} should fail");
        assert_eq!(stderr.lines().count(), 1, "{shown:?}: one line, not:\n{stderr}");
        assert!(stderr.len() < 400, "{shown:?}: a short line, not {} bytes", stderr.len());
        assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{shown:?}: {stderr}");
        assert!(stderr.starts_with("capwatch: "), "{shown:?}: {stderr}");
    }
}
