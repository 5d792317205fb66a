//! capwatch against a real Docker engine and real containers: naming, lifecycle, exec sessions,
//! and the store behind `capwatch ps`. In CI these must run (`cargo xtask test` starts the engine).

use capwatch_tests::{capwatch, container_name, docker_available, json, tempdir};
use serde_json::Value;

/// The daemon's capability-check lines for one container.
fn checks_of<'a>(lines: &'a [String], container_id: &'a str) -> impl Iterator<Item = Value> + 'a {
    lines.iter().map(|l| json(l)).filter(move |v| v["event"] == "capability_check" && v["container_id"] == container_id)
}

#[test]
fn two_containers_at_once_each_observation_lands_on_its_own() {
    let Some(env) = docker_available("two_containers_at_once_each_observation_lands_on_its_own") else { return };
    let state = tempdir("docker-two");
    let mut daemon = env.daemon(&state);
    let (raw, chown) = (container_name("raw"), container_name("chown"));
    let raw_id = env.start(
        &["--name", &raw, "--cap-drop", "ALL", "--cap-add", "NET_RAW"],
        &["sh", "-c", "sleep 1; cw-workload raw-socket; sleep 1"],
    );
    let chown_id = env.start(
        &["--name", &chown, "--cap-add", "CHOWN"],
        &["sh", "-c", "sleep 1; touch /tmp/f; chown 1000:1000 /tmp/f; sleep 1"],
    );
    assert_eq!(env.wait(&raw_id), 0, "the raw socket should open with NET_RAW");
    assert_eq!(env.wait(&chown_id), 0, "chown should succeed with CHOWN");

    let net_raw = json(&daemon.wait_for("CAP_NET_RAW in the raw container", |l| {
        let v = json(l);
        v["event"] == "capability_check" && v["capability"] == "CAP_NET_RAW" && v["container_name"] == raw.as_str()
    }));
    assert_eq!(net_raw["container_id"], raw_id.as_str());
    assert_eq!(
        (net_raw["verdict"].as_str(), net_raw["syscall"].as_str(), net_raw["origin"].as_str()),
        (Some("granted"), Some("socket"), Some("app"))
    );
    assert_eq!(net_raw["image"], env.image.as_str());
    let cap_chown = json(&daemon.wait_for("CAP_CHOWN in the chown container", |l| {
        let v = json(l);
        v["event"] == "capability_check" && v["capability"] == "CAP_CHOWN" && v["container_name"] == chown.as_str()
    }));
    assert_eq!(cap_chown["container_id"], chown_id.as_str());
    assert_eq!(cap_chown["verdict"], "granted");
    assert!(cap_chown["syscall"].as_str().is_some_and(|s| s.contains("chown")), "{cap_chown}");

    let (code, lines) = daemon.stop(libc::SIGTERM);
    assert_eq!(code, Some(0));
    assert!(
        checks_of(&lines, &chown_id).all(|v| v["capability"] != "CAP_NET_RAW"),
        "NET_RAW leaked onto the chown container"
    );
    assert!(
        checks_of(&lines, &raw_id).all(|v| v["capability"] != "CAP_CHOWN" || v["origin"] != "app"),
        "CHOWN leaked onto the raw container"
    );
}

#[test]
fn the_runtime_setup_of_a_cap_drop_all_container_is_not_the_applications() {
    let Some(env) = docker_available("the_runtime_setup_of_a_cap_drop_all_container_is_not_the_applications") else {
        return;
    };
    let state = tempdir("docker-dropall");
    let daemon = env.daemon(&state);
    let name = container_name("dropall");
    let id = env.start(&["--name", &name, "--cap-drop", "ALL"], &["sh", "-c", "sleep 1; ls / >/dev/null"]);
    assert_eq!(env.wait(&id), 0);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (_, lines) = daemon.stop(libc::SIGTERM);

    let checks: Vec<Value> = checks_of(&lines, &id).collect();
    assert!(
        checks.iter().any(|v| v["origin"] == "runtime" && v["verdict"] == "granted"),
        "runc's setup checks should be seen, labelled runtime: {checks:#?}"
    );
    // The kernel may check its own substituted credentials on the application's behalf (overlayfs
    // acting as its mounter); the application's own credentials are never granted anything.
    let app_granted: Vec<&Value> = checks
        .iter()
        .filter(|v| v["origin"] == "app" && v["verdict"] == "granted" && v["credentials"] == "own")
        .collect();
    assert!(app_granted.is_empty(), "a --cap-drop ALL application was granted: {app_granted:#?}");
    assert!(
        checks.iter().any(|v| v["origin"] == "app"),
        "the application's own (denied) checks are seen too: {checks:#?}"
    );
}

#[test]
fn an_exited_container_is_still_listed_by_name() {
    let Some(env) = docker_available("an_exited_container_is_still_listed_by_name") else { return };
    let state = tempdir("docker-exited");
    let mut daemon = env.daemon(&state);
    let name = container_name("exited");
    let id = env.start(&["--name", &name], &["sh", "-c", "sleep 1; cw-workload raw-socket"]);
    assert_eq!(env.wait(&id), 0);
    daemon.wait_for("the container's exit", |l| {
        let v = json(l);
        v["event"] == "container_exit" && v["container_id"] == id.as_str()
    });
    // The next drain persists it; stop the daemon hard to show nothing depends on a clean exit.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    daemon.stop(libc::SIGKILL);

    let state_dir = state.to_str().unwrap();
    let (code, all, stderr) = capwatch(&["ps", "--all", "--state-dir", state_dir]);
    assert_eq!(code, Some(0), "{stderr}");
    let row = all.lines().find(|l| l.contains(&name)).unwrap_or_else(|| panic!("{name} missing from ps --all:\n{all}"));
    assert!(row.contains(&id[..12]) && row.contains("exited") && row.contains(&env.image), "{row}");
    let checks: u64 = row.split_whitespace().rev().nth(1).and_then(|n| n.parse().ok()).expect("CHECKS column");
    assert!(checks > 0, "{row}");
    let (_, running, _) = capwatch(&["ps", "--state-dir", state_dir]);
    assert!(!running.contains(&name), "an exited container is not running:\n{running}");
}

#[test]
fn a_container_started_before_the_daemon_is_picked_up() {
    let Some(env) = docker_available("a_container_started_before_the_daemon_is_picked_up") else { return };
    let name = container_name("early");
    // The application waits for the daemon to watch, and so does not race its start.
    let id = env.start(
        &["--name", &name],
        &["sh", "-c", "until [ -e /tmp/go ]; do sleep 0.1; done; cw-workload raw-socket; sleep 60"],
    );
    let state = tempdir("docker-early");
    let mut daemon = env.daemon(&state);
    env.docker(&["exec", &id, "touch", "/tmp/go"]);
    let check = json(&daemon.wait_for("CAP_NET_RAW from the early container", |l| {
        let v = json(l);
        v["event"] == "capability_check" && v["capability"] == "CAP_NET_RAW" && v["container_id"] == id.as_str()
    }));
    assert_eq!(check["container_name"], name.as_str());
    assert_eq!(check["origin"], "app");
    daemon.stop(libc::SIGTERM);
    env.docker(&["rm", "--force", &id]);
}

#[test]
fn docker_exec_sessions_are_labelled_as_such() {
    let Some(env) = docker_available("docker_exec_sessions_are_labelled_as_such") else { return };
    let state = tempdir("docker-exec");
    let mut daemon = env.daemon(&state);
    let name = container_name("exec");
    let id = env.start(&["--name", &name], &["sleep", "60"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    env.docker(&["exec", &id, "sh", "-c", "cw-workload raw-socket"]);
    let check = json(&daemon.wait_for("CAP_NET_RAW from the exec session", |l| {
        let v = json(l);
        v["event"] == "capability_check" && v["capability"] == "CAP_NET_RAW" && v["container_id"] == id.as_str()
    }));
    assert_eq!(check["origin"], "exec", "{check}");
    assert_eq!(check["comm"], "cw-workload");
    let (_, lines) = daemon.stop(libc::SIGTERM);
    assert!(
        checks_of(&lines, &id).all(|v| v["capability"] != "CAP_NET_RAW" || v["origin"] == "exec"),
        "the exec session's NET_RAW must not be the application's"
    );
    env.docker(&["rm", "--force", &id]);
}

/// A container whose command is a program carrying a file capability, removed as soon as it
/// exits (`docker run --rm`): the process is gone before the daemon can read the file through
/// it, and the container before Docker is asked about it, yet the file is read through the
/// image's layers and its exec's need is advised.
#[test]
fn a_short_lived_container_execing_a_file_capability_is_advised_it() {
    let Some(env) = docker_available("a_short_lived_container_execing_a_file_capability_is_advised_it") else {
        return;
    };
    let state = tempdir("docker-filecap");
    let mut daemon = env.daemon(&state);
    let name = container_name("filecap");
    // The test image's cw-workload-net-raw: cw-workload with the file capability cap_net_raw=ep.
    let image = env.image.clone();
    env.docker(&["run", "--rm", "--network", "none", "--name", &name, &image, "cw-workload-net-raw", "raw-socket"]);
    let exec = json(&daemon.wait_for("the exec of the capable program", |l| {
        let v = json(l);
        v["event"] == "program_exec" && v["container_name"] == name.as_str() && v["origin"] == "app"
    }));
    assert_eq!(exec["path"], "/bin/cw-workload-net-raw", "{exec}");
    assert_eq!(exec["found"], "caps", "{exec}");
    assert!(exec["file_capabilities"].as_str().is_some_and(|c| c.contains("cap_net_raw")), "{exec}");
    let (code, _) = daemon.stop(libc::SIGTERM);
    assert_eq!(code, Some(0));

    let (code, out, stderr) = capwatch(&["report", &name, "--format", "json", "--state-dir", state.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let report = json(&out);
    assert!(report["cap_add"].as_array().is_some_and(|a| a.iter().any(|c| c == "NET_RAW")), "{out}");
    assert!(report["uncertain"].as_array().is_none_or(Vec::is_empty), "{out}");
}
