//! The advice, proven on real containers: each workload runs with Docker's default
//! capabilities under the daemon, then `capwatch verify` recreates it with exactly the advised
//! flags (it must work) and with each advised capability removed in turn (it must fail). Wrong
//! advice is caught, a service is proven with a `--check`, and an interrupted verify leaves no
//! container behind. In CI these must run.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use capwatch_tests::{bin, capwatch, container_name, docker_available, tempdir, wait_stored, DockerEnv};
use serde_json::Value;

/// Runs `command` with Docker's defaults under a daemon, and once the store has it, proves its
/// advice with `capwatch verify`. Returns the advised `docker run` flags, read back after the
/// daemon was killed with SIGKILL (the store has what it wrote), and the verification.
fn advise(env: &DockerEnv, label: &str, command: &[&str]) -> (Vec<String>, Value) {
    let state = tempdir(&format!("advice-{label}"));
    let state_dir = state.to_str().unwrap().to_string();
    let daemon = env.daemon(&state);
    let name = container_name(label);
    let id = env.start(&["--name", &name], command);
    assert_eq!(env.wait(&id), 0, "{label} should work with Docker's default capabilities");
    let report = wait_stored(&state, &name);
    assert_eq!(report["container"]["id"], id.as_str());

    let (code, verification) = verify(env, &state, &name, &[]);
    daemon.stop(libc::SIGKILL);
    assert_no_copies_left(env, &id);
    assert_eq!(code, Some(0), "{verification:#}");

    let (code, flags, stderr) = capwatch(&["report", &id[..10], "--format", "docker", "--state-dir", &state_dir]);
    assert_eq!(code, Some(0), "{stderr}");
    let (_, table, _) = capwatch(&["report", &name, "--state-dir", &state_dir]);
    eprintln!("{label}:\n{table}");
    assert!(table.contains("verified: proven minimal, "), "{table}");
    let flags: Vec<String> = flags.split_whitespace().map(String::from).collect();
    assert_eq!(&flags[..2], ["--cap-drop", "ALL"], "{flags:?}");
    let profile = seccomp_profile(&state, &name);
    let mut options: Vec<&str> = vec!["--security-opt", &profile];
    options.extend(flags.iter().map(String::as_str));
    let again = env.start(&options, command);
    assert_eq!(
        env.wait(&again),
        0,
        "{label} should work with its advice and its seccomp profile: {}",
        env.docker(&["logs", &again])
    );
    (flags, verification)
}

/// `capwatch report NAME --format seccomp` written to a file beside the store: the
/// `--security-opt` that loads it.
fn seccomp_profile(state: &Path, name: &str) -> String {
    let (code, profile, stderr) =
        capwatch(&["report", name, "--format", "seccomp", "--state-dir", state.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let parsed: Value = serde_json::from_str(&profile).unwrap_or_else(|e| panic!("{e}: {profile}"));
    assert_eq!(parsed["defaultAction"], "SCMP_ACT_ERRNO", "{profile}");
    let file = state.join(format!("{name}.seccomp.json"));
    std::fs::write(&file, &profile).expect("write the profile");
    format!("seccomp={}", file.display())
}

/// `capwatch verify NAME ARGS --format json` against the test engine: (exit code, its JSON).
fn verify(env: &DockerEnv, state: &Path, name: &str, args: &[&str]) -> (Option<i32>, Value) {
    let state_dir = state.to_str().unwrap();
    let mut all = vec!["verify", name, "--format", "json", "--state-dir", state_dir, "--docker-socket", &env.socket];
    all.extend_from_slice(args);
    let (code, out, stderr) = capwatch(&all);
    let verification = serde_json::from_str(&out).unwrap_or_else(|e| panic!("verify {args:?}: {e}: {out}{stderr}"));
    (code, verification)
}

/// No container capwatch verify made of `original` (its id) is left on the engine.
fn assert_no_copies_left(env: &DockerEnv, original: &str) {
    let left = copies(env, original, true);
    assert!(left.is_empty(), "verification containers left behind: {left}");
}

/// The containers capwatch verify made of `original`: running ones, or `all`.
fn copies(env: &DockerEnv, original: &str, all: bool) -> String {
    let label = format!("label=io.capwatch.verify.of={original}");
    let mut args = vec!["ps", "--quiet", "--filter", &label];
    if all {
        args.push("--all");
    }
    env.docker(&args)
}

fn advised_caps(flags: &[String]) -> Vec<String> {
    flags.chunks(2).skip(1).map(|pair| pair[1].clone()).collect()
}

fn check(test: &str, label: &str, command: &[&str], expected: &[&str]) {
    let Some(env) = docker_available(test) else { return };
    let (flags, verification) = advise(&env, label, command);
    assert_eq!(advised_caps(&flags), expected, "advised {flags:?}");
    assert_eq!(verification["verdict"], "proven_minimal", "{verification:#}");
    assert_eq!(verification["capabilities"], serde_json::json!(expected), "{verification:#}");
    let trials = verification["trials"].as_array().unwrap();
    assert_eq!(trials.len(), expected.len() + 1, "{verification:#}");
    assert!(trials.iter().skip(1).all(|t| t["worked"] == false), "{verification:#}");
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
    assert!(lacking[0]["syscall"].as_str().unwrap().contains("chown"), "{answer}");
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

/// Waits until the store knows the running container `name` and its report's `cap_add` is
/// `expected`.
fn wait_advised(state: &Path, name: &str, expected: &[&str]) {
    let state_dir = state.to_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out, _) = capwatch(&["report", name, "--format", "json", "--state-dir", state_dir]);
        if code == Some(0) && serde_json::from_str::<Value>(&out).unwrap()["cap_add"] == serde_json::json!(expected) {
            return;
        }
        assert!(Instant::now() < deadline, "the store never advised {expected:?} for {name}: {out}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn wrong_advice_one_short_or_one_too_many_is_caught() {
    let Some(env) = docker_available("wrong_advice_one_short_or_one_too_many_is_caught") else { return };
    let state = tempdir("verify-wrong");
    let daemon = env.daemon(&state);
    let name = container_name("wrong");
    let script = "touch /tmp/f && chown 1000:1000 /tmp/f && cw-workload raw-socket";
    let id = env.start(&["--name", &name], &["sh", "-c", script]);
    assert_eq!(env.wait(&id), 0);
    let report = wait_stored(&state, &name);
    assert_eq!(report["cap_add"], serde_json::json!(["CHOWN", "NET_RAW"]), "{report:#}");

    let (short_code, short) = verify(&env, &state, &name, &["--cap-add", "CHOWN"]);
    let (many_code, many) = verify(&env, &state, &name, &["--cap-add", "CHOWN,NET_RAW,KILL"]);
    daemon.stop(libc::SIGTERM);
    assert_no_copies_left(&env, &id);

    assert_eq!(short_code, Some(1), "{short:#}");
    assert_eq!(short["verdict"], "not_sufficient", "{short:#}");
    let summary = short["summary"].as_str().unwrap();
    assert!(summary.starts_with("not sufficient (this failed: exited "), "{summary}");
    assert!(summary.contains("NET_RAW refused"), "{summary}");

    assert_eq!(many_code, Some(1), "{many:#}");
    assert_eq!(many["verdict"], "sufficient_not_minimal", "{many:#}");
    assert_eq!(many["can_go"], serde_json::json!(["KILL"]), "{many:#}");
    assert_eq!(many["summary"], "sufficient, not minimal (KILL can go)", "{many:#}");
}

/// A long-running service is proven with a --check run inside each copy, while the original
/// keeps running untouched.
#[test]
fn a_service_is_proven_with_its_check() {
    let Some(env) = docker_available("a_service_is_proven_with_its_check") else { return };
    let state = tempdir("verify-service");
    let daemon = env.daemon(&state);
    let name = container_name("service");
    let script = "echo ok > /tmp/index.html && touch /tmp/f && chown 1000:1000 /tmp/f && exec httpd -f -p 8080 -h /tmp";
    let id = env.start(&["--name", &name], &["sh", "-c", script]);
    let probe = "wget -q -O- http://127.0.0.1:8080/index.html";
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.try_docker(&["exec", &id, "sh", "-c", probe]).status.success() {
        assert!(Instant::now() < deadline, "the service never answered");
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_advised(&state, &name, &["CHOWN"]);

    let (code, verification) = verify(&env, &state, &name, &["--check", probe, "--timeout", "10"]);
    let running = env.docker(&["inspect", "--format", "{{.State.Running}}", &id]);
    env.docker(&["rm", "--force", &id]);
    daemon.stop(libc::SIGTERM);
    assert_no_copies_left(&env, &id);
    assert_eq!(running, "true", "the original was touched");
    assert_eq!(code, Some(0), "{verification:#}");
    assert_eq!(verification["verdict"], "proven_minimal", "{verification:#}");
    let trials = verification["trials"].as_array().unwrap();
    assert!(trials[0]["evidence"].as_str().unwrap().starts_with("--check passed"), "{verification:#}");
    assert_eq!(trials[1]["without"], "CHOWN", "{verification:#}");
    assert!(trials[1]["evidence"].as_str().unwrap().contains("before --check passed"), "{verification:#}");
}

#[test]
fn ctrl_c_mid_verify_leaves_no_container_behind() {
    let Some(env) = docker_available("ctrl_c_mid_verify_leaves_no_container_behind") else { return };
    let state = tempdir("verify-interrupted");
    let daemon = env.daemon(&state);
    let name = container_name("interrupted");
    let id = env.start(&["--name", &name], &["sleep", "600"]);
    wait_advised(&state, &name, &[]);

    let child = Command::new(bin("capwatch"))
        .args(["verify", &name, "--check", "false", "--timeout", "120", "--state-dir", state.to_str().unwrap()])
        .args(["--docker-socket", &env.socket])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run capwatch verify");
    let deadline = Instant::now() + Duration::from_secs(20);
    while copies(&env, &id, false).is_empty() {
        assert!(Instant::now() < deadline, "verify never started its copy");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().expect("verify's exit");
    env.docker(&["rm", "--force", &id]);
    daemon.stop(libc::SIGTERM);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted: every verification container was removed"), "{stderr}");
    assert_no_copies_left(&env, &id);
}

/// Greedy elimination from the granted set (Docker's defaults) finds the one capability a chown
/// needs, and proves it.
#[test]
fn minimize_finds_the_least_privilege_from_the_granted_set() {
    let Some(env) = docker_available("minimize_finds_the_least_privilege_from_the_granted_set") else { return };
    let state = tempdir("verify-minimize");
    let daemon = env.daemon(&state);
    let name = container_name("minimize");
    let id = env.start(&["--name", &name], &["sh", "-c", "touch /tmp/f && chown 1000:1000 /tmp/f"]);
    assert_eq!(env.wait(&id), 0);
    wait_stored(&state, &name);
    let (code, verification) = verify(&env, &state, &name, &["--minimize"]);
    daemon.stop(libc::SIGTERM);
    assert_no_copies_left(&env, &id);
    assert_eq!(code, Some(0), "{verification:#}");
    assert_eq!(verification["verdict"], "proven_minimal", "{verification:#}");
    assert_eq!(verification["capabilities"], serde_json::json!(["CHOWN"]), "{verification:#}");
}

/// A container whose image is gone cannot be recreated, and verify says so; without a running
/// daemon nothing would watch the copies, and verify says that.
#[test]
fn verify_says_why_it_cannot_run() {
    let Some(env) = docker_available("verify_says_why_it_cannot_run") else { return };
    let state = tempdir("verify-cannot");
    let state_dir = state.to_str().unwrap();
    let daemon = env.daemon(&state);
    let name = container_name("imagegone");
    let tag = format!("capwatch-test-gone:{}", std::process::id());
    env.docker(&["tag", &env.image, &tag]);
    let id = env.docker(&["run", "--detach", "--network", "none", "--name", &name, &tag, "true"]);
    assert_eq!(env.wait(&id), 0);
    wait_stored(&state, &name);
    env.docker(&["rmi", &tag]);
    let args = ["verify", &name, "--state-dir", state_dir, "--docker-socket", &env.socket];
    let (code, _, stderr) = capwatch(&args);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("{name} cannot be recreated: its image {tag} is gone")), "{stderr}");

    daemon.stop(libc::SIGTERM);
    let (code, _, stderr) = capwatch(&args);
    env.docker(&["rm", &id]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no capwatch daemon is running with this state directory"), "{stderr}");
}
