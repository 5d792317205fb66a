//! The advice, proven on real containers: each workload runs with Docker's default
//! capabilities under the daemon, then again with exactly the advised flags (it must work) and
//! with each advised capability removed in turn (it must fail). In CI these must run.

use std::time::Duration;

use capwatch_tests::{capwatch, container_name, docker_available, tempdir, wait_stored, DockerEnv};
use serde_json::Value;

/// Runs `command` with Docker's defaults under a daemon and returns the advised `docker run`
/// flags, read back after the daemon was killed with SIGKILL (the store has what it wrote).
fn advise(env: &DockerEnv, label: &str, command: &[&str]) -> Vec<String> {
    let state = tempdir(&format!("advice-{label}"));
    let state_dir = state.to_str().unwrap().to_string();
    let daemon = env.daemon(&state);
    let name = container_name(label);
    let id = env.start(&["--name", &name], command);
    assert_eq!(env.wait(&id), 0, "{label} should work with Docker's default capabilities");

    let report = wait_stored(&state, &name);
    daemon.stop(libc::SIGKILL);
    assert_eq!(report["container"]["id"], id.as_str());

    let (code, flags, stderr) = capwatch(&["report", &id[..10], "--format", "docker", "--state-dir", &state_dir]);
    assert_eq!(code, Some(0), "{stderr}");
    let (_, table, _) = capwatch(&["report", &name, "--state-dir", &state_dir]);
    eprintln!("{label}:\n{table}");
    let flags: Vec<String> = flags.split_whitespace().map(String::from).collect();
    assert_eq!(&flags[..2], ["--cap-drop", "ALL"], "{flags:?}");
    flags
}

fn advised_caps(flags: &[String]) -> Vec<String> {
    flags.chunks(2).skip(1).map(|pair| pair[1].clone()).collect()
}

/// The workload works with exactly the advised flags, and fails without any one of them.
fn prove(env: &DockerEnv, flags: &[String], command: &[&str]) {
    let run = |flags: &[String]| {
        let mut args: Vec<&str> = vec!["run", "--rm", "--network", "none"];
        args.extend(flags.iter().map(String::as_str));
        args.push(&env.image);
        args.extend_from_slice(command);
        env.try_docker(&args)
    };
    let out = run(flags);
    assert!(
        out.status.success(),
        "{command:?} fails with the advised {flags:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for cap in advised_caps(flags) {
        let without: Vec<String> =
            flags.chunks(2).filter(|pair| pair[1] != cap || pair[0] != "--cap-add").flatten().cloned().collect();
        let out = run(&without);
        assert!(!out.status.success(), "{command:?} still works without {cap}: the advice asked for more than needed");
    }
}

fn check(test: &str, label: &str, command: &[&str], expected: &[&str]) {
    let Some(env) = docker_available(test) else { return };
    let flags = advise(&env, label, command);
    assert_eq!(advised_caps(&flags), expected, "advised {flags:?}");
    prove(&env, &flags, command);
}

/// `capwatch whatif` on the store of a run: (exit code, its JSON answer).
fn whatif(state_dir: &str, name: &str, set: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec!["whatif", name, "--format", "json", "--state-dir", state_dir];
    args.extend_from_slice(set);
    let (code, out, stderr) = capwatch(&args);
    let answer = serde_json::from_str(&out).unwrap_or_else(|e| panic!("whatif {set:?}: {e}: {out}{stderr}"));
    (code, answer)
}

/// What-if answers from the store alone: a raw socket opened by a program that carries
/// cap_net_raw=ep and a chown, each failing under a set without its capability.
#[test]
fn whatif_names_what_would_fail_from_the_store_including_execs_of_file_capabilities() {
    let Some(env) =
        docker_available("whatif_names_what_would_fail_from_the_store_including_execs_of_file_capabilities")
    else {
        return;
    };
    let state = tempdir("whatif");
    let state_dir = state.to_str().unwrap().to_string();
    let daemon = env.daemon(&state);
    let name = container_name("whatif");
    let script = "cw-workload-net-raw raw-socket && touch /tmp/f && chown 1000:1000 /tmp/f";
    let id = env.start(&["--name", &name], &["sh", "-c", script]);
    assert_eq!(env.wait(&id), 0);
    wait_stored(&state, &name);
    daemon.stop(libc::SIGKILL);

    let (code, answer) = whatif(&state_dir, &name, &["--cap-add", "NET_RAW,CHOWN"]);
    assert_eq!(code, Some(0), "{answer}");
    assert_eq!(answer["breaks"], false, "{answer}");

    let (code, answer) = whatif(&state_dir, &name, &["--cap-add", "NET_RAW"]);
    assert_eq!(code, Some(1), "{answer}");
    let lacking: Vec<&Value> = answer["operations"].as_array().unwrap().iter().collect();
    assert_eq!(lacking.len(), 1, "{answer}");
    assert_eq!(lacking[0]["capability"], "CHOWN", "{answer}");
    assert!(
        lacking[0]["syscalls"].as_array().unwrap().iter().any(|s| s.as_str().unwrap().contains("chown")),
        "{answer}"
    );
    assert!(answer["execs"].as_array().unwrap().is_empty(), "{answer}");

    // Relative to what it holds now (Docker's defaults, without NET_RAW): the exec fails.
    let (code, answer) = whatif(&state_dir, &name, &["--cap-drop", "NET_RAW"]);
    assert_eq!(code, Some(1), "{answer}");
    let execs = answer["execs"].as_array().unwrap();
    assert_eq!(execs.len(), 1, "{answer}");
    assert_eq!(execs[0]["path"], "/bin/cw-workload-net-raw", "{answer}");
    assert_eq!(execs[0]["lacking"], serde_json::json!(["NET_RAW"]), "{answer}");

    let (code, table, stderr) = capwatch(&["whatif", &name, "--cap-drop", "ALL", "--state-dir", &state_dir]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(table.contains("CHOWN") && table.contains("cw-workload-net-raw"), "{table}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("would fail under this set"), "{stderr}");
}

#[test]
fn a_raw_socket_needs_net_raw_only() {
    check("a_raw_socket_needs_net_raw_only", "rawsock", &["cw-workload", "raw-socket"], &["NET_RAW"]);
}

#[test]
fn chown_to_another_user_needs_chown_only() {
    check(
        "chown_to_another_user_needs_chown_only",
        "chown",
        &["sh", "-c", "touch /tmp/f && chown 1000:1000 /tmp/f"],
        &["CHOWN"],
    );
}

#[test]
fn a_program_that_only_maps_memory_needs_nothing() {
    check("a_program_that_only_maps_memory_needs_nothing", "mmap", &["cw-workload", "mmap", "1000"], &[]);
}

#[test]
fn mknod_of_a_device_needs_mknod_only() {
    check("mknod_of_a_device_needs_mknod_only", "mknod", &["mknod", "/tmp/null", "c", "1", "3"], &["MKNOD"]);
}

#[test]
fn caps_decode_names_every_set_bit_of_seed_001s_mask() {
    let (code, out, stderr) = capwatch(&["caps", "decode", "0000001dbdbeffff"]);
    assert_eq!(code, Some(0), "{stderr}");
    let names: Vec<&str> = out.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(names.len(), 0x1dbdbeffffu64.count_ones() as usize, "{out}");
    for set in ["CAP_SYS_ADMIN", "CAP_MAC_OVERRIDE", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND"] {
        assert!(names.contains(&set), "{set} missing:\n{out}");
    }
    for clear in ["CAP_SYS_MODULE", "CAP_SYS_BOOT", "CAP_SYS_TIME", "CAP_AUDIT_CONTROL"] {
        assert!(!names.contains(&clear), "{clear} is not set:\n{out}");
    }
}

#[test]
fn unknown_and_ambiguous_containers_are_clear_errors() {
    let Some(env) = docker_available("unknown_and_ambiguous_containers_are_clear_errors") else { return };
    let state = tempdir("resolve");
    let state_dir = state.to_str().unwrap().to_string();
    let mut daemon = env.daemon(&state);
    // Seventeen ids cannot all differ in their first hex digit.
    let ids: Vec<String> = (0..17)
        .map(|_| {
            let id = env.start(&["--name", &container_name("many")], &["true"]);
            env.wait(&id);
            id
        })
        .collect();
    for id in &ids {
        daemon.wait_for("each container's exit", |l| capwatch_tests::json(l)["container_id"] == id.as_str());
    }
    std::thread::sleep(Duration::from_millis(2500));
    daemon.stop(libc::SIGTERM);

    let (code, ps, _) = capwatch(&["ps", "--all", "--state-dir", &state_dir]);
    assert_eq!(code, Some(0));
    assert!(ids.iter().all(|id| ps.contains(&id[..12])), "{ps}");

    let first = ids
        .iter()
        .find(|a| ids.iter().filter(|b| b.as_bytes()[0] == a.as_bytes()[0]).count() > 1)
        .expect("a shared digit");
    let prefix = &first[..1];
    let (code, _, stderr) = capwatch(&["report", prefix, "--state-dir", &state_dir]);
    assert_eq!(code, Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("matches more than one container") && stderr.contains(&first[..12]), "{stderr}");

    let (code, out, stderr) = capwatch(&["report", &first[..12], "--format", "json", "--state-dir", &state_dir]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["container"]["id"], first.as_str());

    let (code, _, stderr) = capwatch(&["report", "no-such-container", "--state-dir", &state_dir]);
    assert_eq!(code, Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no container matches \"no-such-container\""), "{stderr}");
}
