//! dockerd restarted under a running daemon. A test binary of its own: restarting the engine
//! stops every container, and the test binaries run one after the other.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use capwatch_tests::{container_name, docker_available, json, tempdir, DockerEnv};

/// The daemon sees the engine go, follows it again when it is back, and names a container
/// started while it was reconnecting.
#[test]
fn a_restarted_dockerd_is_followed_again() {
    let Some(env) = docker_available("a_restarted_dockerd_is_followed_again") else { return };
    let state = tempdir("dockerd-restart");
    let mut daemon = env.daemon(&state);

    restart_dockerd(&env);
    daemon.wait_for("the engine's going", |l| json(l)["event"] == "docker_disconnected");
    // Started as soon as the engine answers; capwatch reconnects within its retry interval.
    let name = container_name("after-restart");
    let id = env.start(
        &["--name", &name],
        &["sh", "-c", "until [ -e /tmp/go ]; do sleep 0.1; done; cw-workload raw-socket; sleep 60"],
    );
    daemon.wait_for("the engine followed again", |l| json(l)["event"] == "docker_connected");
    env.docker(&["exec", &id, "touch", "/tmp/go"]);
    let check = json(&daemon.wait_for("CAP_NET_RAW from the new container", |l| {
        let v = json(l);
        v["event"] == "capability_check" && v["capability"] == "CAP_NET_RAW" && v["container_id"] == id.as_str()
    }));
    assert_eq!(check["container_name"], name.as_str(), "{check}");
    assert_eq!(check["origin"], "app", "{check}");
    let (code, _) = daemon.stop(libc::SIGTERM);
    assert_eq!(code, Some(0));
    env.docker(&["rm", "--force", &id]);
}

/// Stops the test engine and starts it again with the same command line, in the same network
/// namespace, detached from this test so that it serves the tests after it.
fn restart_dockerd(env: &DockerEnv) {
    let root = Path::new(&env.socket).parent().expect("the engine's root");
    let pid: u32 = fs::read_to_string(root.join("dockerd.pid")).expect("dockerd's pid file").trim().parse().unwrap();
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).expect("dockerd's command line");
    let args: Vec<String> =
        cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into()).collect();
    let netns = std::env::var("CAPWATCH_TEST_DOCKER_NETNS").ok().filter(|n| !n.is_empty());

    // SAFETY: a signal to a pid read from the engine's own pid file.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0, "stop dockerd");
    let deadline = Instant::now() + Duration::from_secs(60);
    // Stopped once gone, or a zombie its parent (xtask) has not reaped yet.
    let running = || {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"))
    };
    while running() {
        assert!(Instant::now() < deadline, "dockerd did not stop within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }

    // setsid --fork: the engine runs on in a session of its own, as the one xtask started did.
    let mut command = Command::new("setsid");
    command.arg("--fork");
    if let Some(name) = &netns {
        command.arg("nsenter").arg(format!("--net=/run/netns/{name}"));
    }
    let log = fs::OpenOptions::new().append(true).create(true).open(root.join("dockerd.log")).expect("dockerd.log");
    let status = command.args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).status();
    assert!(status.expect("setsid").success(), "start dockerd again");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !env.try_docker(&["version"]).status.success() {
        assert!(Instant::now() < deadline, "dockerd did not answer again within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}
