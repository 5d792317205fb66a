//! `capwatch explain` on real containers under real seccomp filters: each EPERM/EACCES gets its
//! cause. In CI these must run (`cargo xtask test` starts the Docker engine).

use capwatch_tests::{capwatch, container_name, docker_available, json, tempdir, wait_stored, DockerEnv};
use serde_json::Value;

/// Runs each (options, command) as a container under one daemon and returns, per container,
/// its explanations. Every explanation must be the very sentence the daemon's JSON line gave
/// the same failure: capwatch never tells one failure two ways.
fn explain_all(env: &DockerEnv, label: &str, runs: &[(&[&str], &[&str])]) -> Vec<Vec<Value>> {
    let state = tempdir(&format!("explain-{label}"));
    let daemon = env.daemon(&state);
    let names: Vec<String> = runs
        .iter()
        .map(|(options, command)| {
            let name = container_name(label);
            let mut all = vec!["--name", &name];
            all.extend_from_slice(options);
            let id = env.start(&all, command);
            env.wait(&id);
            name
        })
        .collect();
    for name in &names {
        wait_stored(&state, name);
    }
    let (_, lines) = daemon.stop(libc::SIGTERM);
    let failures: Vec<Value> = lines.iter().map(|l| json(l)).filter(|l| l["event"] == "syscall_failure").collect();
    names
        .iter()
        .map(|name| {
            let (code, out, stderr) =
                capwatch(&["explain", name, "--format", "json", "--state-dir", state.to_str().unwrap()]);
            assert_eq!(code, Some(0), "{stderr}");
            let (_, table, _) = capwatch(&["explain", name, "--state-dir", state.to_str().unwrap()]);
            eprintln!("{table}");
            let explanations = serde_json::from_str::<Vec<Value>>(&out).expect("explain JSON");
            for e in &explanations {
                let said: Vec<&Value> = failures
                    .iter()
                    .filter(|l| {
                        l["container_name"] == name.as_str()
                            && l["syscall"] == e["syscall"]
                            && l["errno"] == e["errno"]
                            && l["failing_uid"] == e["uid"]
                            && l["origin"] == e["origin"]
                    })
                    .map(|l| &l["explanation"])
                    .collect();
                assert!(!said.is_empty(), "no JSON line for {e:#}");
                assert!(
                    said.iter().all(|s| **s == e["text"]),
                    "the JSON lines said {said:?}, explain says {}",
                    e["text"]
                );
            }
            explanations
        })
        .collect()
}

/// The explanation of `syscall`'s failure; exactly one is expected.
fn of<'a>(explanations: &'a [Value], syscall: &str) -> &'a Value {
    let found: Vec<&Value> = explanations.iter().filter(|e| e["syscall"] == syscall).collect();
    assert_eq!(found.len(), 1, "one {syscall} failure expected: {explanations:#?}");
    found[0]
}

fn caps_of(explanation: &Value) -> Vec<&str> {
    explanation["cause"]["capabilities"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn fanotify_init_is_seccomp_then_sys_admin_then_nothing() {
    let Some(env) = docker_available("fanotify_init_is_seccomp_then_sys_admin_then_nothing") else { return };
    let runs: [(&[&str], &[&str]); 3] = [
        (&["--security-opt", "seccomp=unconfined"], &["cw-workload", "fanotify"]),
        (&[], &["cw-workload", "fanotify"]),
        (&["--cap-add", "SYS_ADMIN"], &["cw-workload", "fanotify"]),
    ];
    let [unconfined, default, with_sys_admin] = explain_all(&env, "fanotify", &runs).try_into().expect("three");

    let e = of(&unconfined, "fanotify_init");
    assert_eq!(e["cause"]["kind"], "capability", "{e:#}");
    assert_eq!(caps_of(e), ["CAP_SYS_ADMIN"]);
    assert_eq!((e["errno"].as_str(), e["uid"].as_u64()), (Some("EPERM"), Some(0)));

    let e = of(&default, "fanotify_init");
    assert_eq!(e["cause"]["kind"], "seccomp", "{e:#}");
    assert_eq!(e["cause"]["profile_requires"], serde_json::json!(["CAP_SYS_ADMIN"]));
    assert_eq!(
        e["text"],
        "blocked by seccomp: Docker's default profile allows fanotify_init only with CAP_SYS_ADMIN (uid 0), and the kernel also requires CAP_SYS_ADMIN for it"
    );

    assert!(with_sys_admin.iter().all(|e| e["syscall"] != "fanotify_init"), "{with_sys_admin:#?}");
}

#[test]
fn unshare_is_seccomp_under_the_default_profile_and_sys_admin_unconfined() {
    let Some(env) = docker_available("unshare_is_seccomp_under_the_default_profile_and_sys_admin_unconfined") else {
        return;
    };
    let runs: [(&[&str], &[&str]); 2] =
        [(&[], &["unshare", "-m", "true"]), (&["--security-opt", "seccomp=unconfined"], &["unshare", "-m", "true"])];
    let [default, unconfined] = explain_all(&env, "unshare", &runs).try_into().expect("two");
    let e = of(&default, "unshare");
    assert_eq!(e["cause"]["kind"], "seccomp", "{e:#}");
    assert_eq!(e["cause"]["profile_requires"], serde_json::json!(["CAP_SYS_ADMIN"]));
    let e = of(&unconfined, "unshare");
    assert_eq!(e["cause"]["kind"], "capability", "{e:#}");
    assert_eq!(caps_of(e), ["CAP_SYS_ADMIN"]);
}

#[test]
fn a_raw_socket_without_net_raw_and_a_custom_profile_refusing_chmod() {
    let Some(env) = docker_available("a_raw_socket_without_net_raw_and_a_custom_profile_refusing_chmod") else {
        return;
    };
    // Seed 003's experiment: a profile that refuses chmod outright.
    let profile_dir = tempdir("explain-profile");
    let profile = profile_dir.join("no-chmod.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["chmod", "fchmod", "fchmodat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .expect("write profile");
    let seccomp = format!("seccomp={}", profile.display());
    let runs: [(&[&str], &[&str]); 2] = [
        (&["--cap-drop", "NET_RAW"], &["cw-workload", "raw-socket"]),
        (&["--security-opt", &seccomp], &["sh", "-c", "touch /tmp/f; cw-workload chmod /tmp/f"]),
    ];
    let [raw, chmod] = explain_all(&env, "custom", &runs).try_into().expect("two");
    let e = of(&raw, "socket");
    assert_eq!(e["cause"]["kind"], "capability", "{e:#}");
    assert_eq!(caps_of(e), ["CAP_NET_RAW"]);
    let e = chmod.iter().find(|e| e["syscall"] == "chmod" || e["syscall"] == "fchmodat").expect("the chmod failure");
    assert_eq!(
        e["cause"]["kind"], "seccomp",
        "root holds every capability chmod needs, only the filter refuses: {e:#}"
    );
    assert_eq!(e["cause"]["profile_requires"], serde_json::json!([]));
}

#[test]
fn a_root_only_file_is_file_permissions_for_a_user_and_a_capability_for_root() {
    let Some(env) = docker_available("a_root_only_file_is_file_permissions_for_a_user_and_a_capability_for_root")
    else {
        return;
    };
    let runs: [(&[&str], &[&str]); 2] = [
        (&[], &["sh", "-c", "echo s > /tmp/s; chmod 600 /tmp/s; cw-workload as-user 65534 open /tmp/s"]),
        (
            &["--cap-drop", "DAC_OVERRIDE", "--cap-drop", "DAC_READ_SEARCH"],
            &["sh", "-c", "echo s > /tmp/s; chmod 000 /tmp/s; cw-workload open /tmp/s"],
        ),
    ];
    let [user, root] = explain_all(&env, "dac", &runs).try_into().expect("two");
    let e = of(&user, "openat");
    assert_eq!(e["cause"]["kind"], "file_permissions", "{e:#}");
    assert_eq!((e["uid"].as_u64(), e["errno"].as_str()), (Some(65534), Some("EACCES")));
    assert!(e["text"].as_str().is_some_and(|t| t.contains("uid 65534") && t.contains("CAP_DAC_OVERRIDE")), "{e:#}");
    let e = of(&root, "openat");
    assert_eq!(e["cause"]["kind"], "capability", "{e:#}");
    assert_eq!(e["uid"], 0);
    let mut caps = caps_of(e);
    caps.sort();
    assert_eq!(caps, ["CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH"]);
    assert!(e["cause"]["suffices"].as_str().is_some_and(|s| s.starts_with("CAP_DAC_OVERRIDE")), "{e:#}");
}
