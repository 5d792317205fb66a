//! capwatch as a service: its config, systemd's protocol, SIGHUP, the unit and its capabilities,
//! and what it ships to real rsyslog and Prometheus servers and to Kubernetes. The tools come
//! from Debian and PyPI (`./x test` installs them); in CI a missing one fails the test.

use std::{
    collections::HashSet,
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use caps::Capability::CAP_NET_RAW;
use capwatch_tests::{
    bin, capwatch, check_line, json, kernel_available, refused, tempdir, test_backend, test_probe, tool_available,
    Launch, Reaped, Running, TestCgroup, PATIENCE,
};
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Polls `what` for up to 20 s.
fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The daemon's lines in a log file, each checked against the schema.
fn file_lines(path: &Path) -> Vec<Value> {
    fs::read_to_string(path).unwrap_or_default().lines().map(check_line).collect()
}

fn wait_in_file(path: &Path, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    eventually(what, || file_lines(path).into_iter().find(|v| wanted(v)))
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill has no memory preconditions.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0, "kill {signal}");
}

/// A daemon whose lines go to a file, on the run's backend: its process and that file.
fn daemon_to_file(args: &[&str], log: &Path) -> Reaped {
    let probe = test_probe().to_string();
    let mut all = vec!["daemon", "--probe", &probe, "--log-file", log.to_str().expect("utf-8")];
    all.extend_from_slice(args);
    let child = Command::new(bin("capwatch"))
        .args(&all)
        .env("CAPWATCH_CONFIG", "/dev/null")
        .env("CAPWATCH_METRICS_LISTEN", "")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start capwatch");
    let child = Reaped(child);
    wait_in_file(log, "event=started", |v| v["event"] == "started");
    child
}

fn stop(mut daemon: Reaped) {
    signal(&daemon.0, libc::SIGTERM);
    assert_eq!(daemon.0.wait().expect("wait").code(), Some(0), "the daemon should stop cleanly on SIGTERM");
}

/// An unused local TCP port.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind").port()
}

/// A GET over HTTP/1.0: (status, body).
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn config_default_documents_every_setting_and_a_bad_config_is_one_line() {
    let (code, text, stderr) = capwatch(&["config", "default"]);
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = text.lines().collect();
    let keys: Vec<&str> = lines
        .iter()
        .filter(|l| !l.starts_with('#') && l.contains(" = "))
        .filter_map(|l| l.split(" = ").next())
        .collect();
    assert_eq!(
        keys,
        [
            "state_dir",
            "cgroup_root",
            "probe",
            "docker_socket",
            "retention_days",
            "log_file",
            "metrics_listen",
            "summary_interval",
            "syscall_sets",
            "host_name",
            "caps_map_entries",
            "failures_map_entries",
            "execs_map_entries",
            "stack_map_entries",
            "denied_map_entries",
            "kprobe_stash_entries",
            "ringbuf_bytes"
        ],
        "{text}"
    );
    // Each setting has a comment above it, a flag and an environment variable.
    let (_, help, _) = capwatch(&["daemon", "--help"]);
    for key in keys {
        let at = lines.iter().position(|l| l.starts_with(&format!("{key} = "))).expect("the key's line");
        assert!(at > 0 && lines[at - 1].starts_with('#'), "{key} is not documented:\n{text}");
        let (flag, env) = (format!("--{}", key.replace('_', "-")), format!("CAPWATCH_{}", key.to_uppercase()));
        assert!(help.contains(&flag) && help.contains(&env), "daemon --help lacks {flag} / {env}:\n{help}");
    }

    let dir = tempdir("badconfig");
    let config = dir.join("config.toml");
    fs::write(&config, "state_dir = \"/tmp\"\nsummary_interval = \"often\"\n").expect("write");
    let (code, stdout, stderr) = capwatch(&["daemon", "--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("config.toml: summary_interval: invalid type"), "{stderr}");
    assert!(stdout.is_empty(), "a daemon with a bad config writes nothing else: {stdout}");
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn a_flag_beats_the_environment_which_beats_the_file() {
    let dir = tempdir("layers");
    let config = dir.join("config.toml");
    fs::write(&config, "retention_days = 3\nsummary_interval = 10\nhost_name = \"from-file\"\nprobe = \"kprobe\"\n")
        .expect("write");
    let out = Command::new(bin("capwatch"))
        .args(["config", "show", "--config", config.to_str().unwrap(), "--summary-interval", "20"])
        .env("CAPWATCH_SUMMARY_INTERVAL", "15")
        .env("CAPWATCH_RETENTION_DAYS", "5")
        .output()
        .expect("run capwatch");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for expected in [
        "retention_days = 5",
        "summary_interval = 20",
        "host_name = \"from-file\"",
        "probe = \"kprobe\"",
        "metrics_listen = \"127.0.0.1:9473\"",
    ] {
        assert!(text.lines().any(|l| l == expected), "{expected} missing:\n{text}");
    }
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = tool_available("the_unit_passes_systemd_analyze_verify", "systemd-analyze") else { return };
    // The unit names the installed binary; here it is the one just built.
    let unit = fs::read_to_string(repo("deploy/capwatch.service")).expect("deploy/capwatch.service");
    assert!(unit.contains("ExecStart=/usr/bin/capwatch daemon"), "{unit}");
    let dir = tempdir("unit");
    let path = dir.join("capwatch.service");
    fs::write(&path, unit.replace("/usr/bin/capwatch", bin("capwatch").to_str().expect("utf-8"))).expect("write");
    let out = Command::new(analyze).args(["verify", "--man=no"]).arg(&path).output().expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
    let _ = fs::remove_dir_all(dir);
}

/// The capabilities the unit leaves capwatch (CapabilityBoundingSet=).
fn unit_capabilities() -> HashSet<caps::Capability> {
    let unit = fs::read_to_string(repo("deploy/capwatch.service")).expect("deploy/capwatch.service");
    let line = unit.lines().find_map(|l| l.strip_prefix("CapabilityBoundingSet=")).expect("CapabilityBoundingSet=");
    line.split_whitespace().map(|name| name.parse().unwrap_or_else(|_| panic!("{name} is no capability"))).collect()
}

#[test]
fn the_units_capabilities_are_all_the_daemon_needs() {
    if !kernel_available("the_units_capabilities_are_all_the_daemon_needs") {
        return;
    }
    let keep = unit_capabilities();
    let drop: Vec<caps::Capability> = caps::all().difference(&keep).copied().collect();
    let parent = TestCgroup::new("unitcaps");
    let cgroup = parent.child("workload");
    let state = tempdir("unitcaps-state");
    let mut daemon = Running::start_as(
        &Launch::default().dropping(&drop),
        &["daemon", "--state-dir", state.to_str().unwrap(), "--cgroup-root", &parent.name],
        &[],
    );
    daemon.wait_for("event=started", |l| json(l)["event"] == "started");
    let status = fs::read_to_string(format!("/proc/{}/status", daemon.child.id())).expect("status");
    let effective = status.lines().find_map(|l| l.strip_prefix("CapEff:")).map(str::trim).expect("CapEff");
    let expected: u64 = keep.iter().map(|c| 1u64 << c.index()).sum();
    assert_eq!(u64::from_str_radix(effective, 16).ok(), Some(expected), "the daemon runs with exactly the unit's set");

    let out = Launch::in_cgroup(&cgroup).dropping(&[CAP_NET_RAW]).run(&["raw-socket"]);
    assert!(refused(&out), "{out:?}");
    let check = json(&daemon.wait_for("the denied CAP_NET_RAW check", |l| {
        let v = json(l);
        v["event"] == "capability_check" && v["capability"] == "CAP_NET_RAW"
    }));
    assert_eq!(check["cgroup"], cgroup.name.as_str());
    let (code, lines) = daemon.stop(libc::SIGTERM);
    assert_eq!(code, Some(0));
    assert!(!lines.iter().any(|l| json(l)["level"] == "ERROR"), "{lines:#?}");
    let _ = fs::remove_dir_all(state);
}

#[test]
fn the_daemon_tells_the_service_manager_ready_reloading_and_stopping() {
    if !kernel_available("the_daemon_tells_the_service_manager_ready_reloading_and_stopping") {
        return;
    }
    let dir = tempdir("notify");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let receive = || {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let cgroup = TestCgroup::new("notify");
    let state = dir.join("state");
    let mut daemon = Running::start_with(
        &["daemon", "--state-dir", state.to_str().unwrap(), "--cgroup-root", &cgroup.name],
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    let ready = receive();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(ready.contains(&format!("STATUS=watching with the {} probe", test_backend())), "{ready}");
    // READY comes once the probes are attached: `started` was written before it.
    daemon.wait_for("event=started", |l| json(l)["event"] == "started");

    signal(&daemon.child, libc::SIGHUP);
    assert!(receive().lines().any(|l| l == "RELOADING=1"));
    assert!(receive().lines().any(|l| l == "READY=1"));
    daemon.wait_for("event=reloaded", |l| json(l)["event"] == "reloaded");

    signal(&daemon.child, libc::SIGTERM);
    assert!(receive().lines().any(|l| l == "STOPPING=1"));
    let (code, _) = daemon.stop(0);
    assert_eq!(code, Some(0));
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn sighup_reopens_the_log_file_and_rereads_the_config() {
    if !kernel_available("sighup_reopens_the_log_file_and_rereads_the_config") {
        return;
    }
    let dir = tempdir("sighup");
    let (log, rotated, config) = (dir.join("capwatch.ndjson"), dir.join("capwatch.ndjson.1"), dir.join("config.toml"));
    fs::write(&config, "summary_interval = 0\n").expect("write");
    let parent = TestCgroup::new("sighup");
    // A cgroup named like a container (a --cgroup-parent one): its lines and summary carry it.
    let container_id = format!("{:064x}", 0xc0ffee_u64 + u64::from(std::process::id()));
    let container = parent.child(&container_id);
    let state = dir.join("state");
    let daemon = daemon_to_file(
        &["--config", config.to_str().unwrap(), "--state-dir", state.to_str().unwrap(), "--cgroup-root", &parent.name],
        &log,
    );

    // logrotate renames the file, then signals.
    fs::rename(&log, &rotated).expect("rotate");
    fs::write(&config, "summary_interval = 1\nretention_days = 7\ndocker_socket = \"/run/elsewhere.sock\"\n")
        .expect("write");
    signal(&daemon.0, libc::SIGHUP);
    wait_in_file(&log, "event=reloaded in the new file", |v| v["event"] == "reloaded");
    let later = wait_in_file(&log, "the changed docker_socket reported", |v| v["event"] == "restart_needed");
    assert_eq!(later["settings"], "docker_socket");

    let out = Launch::in_cgroup(&container).dropping(&[CAP_NET_RAW]).run(&["raw-socket"]);
    assert!(refused(&out), "{out:?}");
    let check = wait_in_file(&log, "the check in the new file", |v| {
        v["event"] == "capability_check" && v["capability"] == "CAP_NET_RAW"
    });
    assert_eq!(check["container_id"], container_id.as_str());
    assert_eq!(check["container_name"], &container_id[..12]);
    let summary = wait_in_file(&log, "a summary, now that summaries are on", |v| v["event"] == "summary");
    assert_eq!(summary["container_id"], container_id.as_str());
    assert!(summary["denied"].as_str().is_some_and(|d| d.split(',').any(|c| c == "CAP_NET_RAW")), "{summary}");
    assert!(summary["failing_syscalls"].as_str().is_some_and(|d| d.contains("socket:EPERM")), "{summary}");

    // A broken config on reload is reported; the daemon keeps running on the old one.
    fs::write(&config, "summary_interval = -1\n").expect("write");
    signal(&daemon.0, libc::SIGHUP);
    let failed = wait_in_file(&log, "reload_failed", |v| v["event"] == "reload_failed");
    assert!(failed["error"].as_str().is_some_and(|e| e.contains("summary_interval")), "{failed}");
    stop(daemon);

    let old = file_lines(&rotated);
    assert!(old.iter().any(|v| v["event"] == "started") && !old.iter().any(|v| v["event"] == "reloaded"));
    assert!(file_lines(&log).iter().any(|v| v["event"] == "stopped"));
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn rsyslog_forwards_the_lines_intact() {
    if !kernel_available("rsyslog_forwards_the_lines_intact") {
        return;
    }
    let Some(rsyslogd) = tool_available("rsyslog_forwards_the_lines_intact", "rsyslogd") else { return };
    let dir = tempdir("rsyslog");
    let log = dir.join("capwatch.ndjson");
    // The receiver: every line of every connection, in order.
    let receiver = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = receiver.local_addr().expect("addr").port();
    let (tx, received) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for stream in receiver.incoming().map_while(Result::ok) {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
    });
    // deploy/rsyslog/capwatch.conf as shipped, pointed at this file and this receiver.
    let shipped = fs::read_to_string(repo("deploy/rsyslog/capwatch.conf")).expect("deploy/rsyslog/capwatch.conf");
    assert!(
        shipped.contains("/var/log/capwatch/capwatch.ndjson")
            && shipped.contains("Target=\"logs.example.net\" Port=\"5170\"")
    );
    let conf = shipped
        .replace("/var/log/capwatch/capwatch.ndjson", log.to_str().unwrap())
        .replace("Target=\"logs.example.net\" Port=\"5170\"", &format!("Target=\"127.0.0.1\" Port=\"{port}\""));
    fs::write(dir.join("capwatch.conf"), conf).expect("write");
    fs::create_dir_all(dir.join("work")).expect("mkdir");
    fs::write(
        dir.join("rsyslog.conf"),
        format!(
            "global(workDirectory=\"{}\")\ninclude(file=\"{}\")\n",
            dir.join("work").display(),
            dir.join("capwatch.conf").display()
        ),
    )
    .expect("write");
    let mut rsyslog = Reaped(
        Command::new(rsyslogd)
            .args(["-n", "-f"])
            .arg(dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rsyslogd"),
    );

    let parent = TestCgroup::new("rsyslog");
    let cgroup = parent.child("workload");
    let state = dir.join("state");
    let daemon = daemon_to_file(&["--state-dir", state.to_str().unwrap(), "--cgroup-root", &parent.name], &log);
    let out = Launch::in_cgroup(&cgroup).dropping(&[CAP_NET_RAW]).run(&["raw-socket"]);
    assert!(refused(&out), "{out:?}");
    wait_in_file(&log, "the CAP_NET_RAW check", |v| {
        v["event"] == "capability_check" && v["capability"] == "CAP_NET_RAW"
    });
    stop(daemon);

    let written: Vec<String> = fs::read_to_string(&log).expect("log").lines().map(str::to_string).collect();
    let mut arrived = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrived.len() < written.len() {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else { break };
        match received.recv_timeout(left) {
            Ok(line) => arrived.push(line),
            Err(_) => break,
        }
    }
    let _ = rsyslog.0.kill();
    let mut stderr = String::new();
    if let Some(mut pipe) = rsyslog.0.stderr.take() {
        let _ = rsyslog.0.wait();
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert_eq!(arrived, written, "rsyslog should deliver every line byte for byte; rsyslogd said:\n{stderr}");
    assert!(arrived.iter().any(|l| check_line(l)["capability"] == "CAP_NET_RAW"));
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn prometheus_scrapes_the_metrics_and_promtool_accepts_them() {
    if !kernel_available("prometheus_scrapes_the_metrics_and_promtool_accepts_them") {
        return;
    }
    let test = "prometheus_scrapes_the_metrics_and_promtool_accepts_them";
    let (Some(prometheus), Some(promtool)) = (tool_available(test, "prometheus"), tool_available(test, "promtool"))
    else {
        return;
    };
    let dir = tempdir("prometheus");
    let parent = TestCgroup::new("prometheus");
    let cgroup = parent.child("workload");
    let mut daemon = Running::start(&[
        "daemon",
        "--state-dir",
        dir.join("state").to_str().unwrap(),
        "--cgroup-root",
        &parent.name,
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let listening = json(&daemon.wait_for("event=metrics_listening", |l| json(l)["event"] == "metrics_listening"));
    let metrics = listening["address"].as_str().expect("address").to_string();
    let out = Launch::in_cgroup(&cgroup).dropping(&[CAP_NET_RAW]).run(&["raw-socket"]);
    assert!(refused(&out), "{out:?}");
    daemon.wait_for("the check", |l| json(l)["capability"] == "CAP_NET_RAW");

    let (status, exposition) = eventually("capwatch's metrics with the check", || {
        http_get(&metrics, "/metrics").filter(|(_, body)| body.contains("CAP_NET_RAW"))
    });
    assert_eq!(status, 200);
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    check.stdin.take().expect("stdin").write_all(exposition.as_bytes()).expect("write");
    let out = check.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(http_get(&metrics, "/nothing").map(|(s, _)| s), Some(404));

    let port = free_port();
    let web = format!("127.0.0.1:{port}");
    fs::write(
        dir.join("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: capwatch\n    static_configs:\n      - targets: ['{metrics}']\n"),
    )
    .expect("write");
    let _server = Reaped(
        Command::new(prometheus)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let query = |q: &str| -> Option<Vec<Value>> {
        let (status, body) = http_get(&web, &format!("/api/v1/query?query={}", percent_encode(q)))?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (status == 200 && v["status"] == "success")
            .then(|| v["data"]["result"].as_array().cloned().unwrap_or_default())
            .filter(|r| !r.is_empty())
    };
    let value = |series: &Value| series["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).unwrap_or(-1.0);
    let checks = eventually("Prometheus to scrape the denied CAP_NET_RAW check", || {
        query("capwatch_capability_checks_total{capability=\"CAP_NET_RAW\",verdict=\"denied\"}")
    });
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!(value(&checks[0]), 1.0, "{checks:?}");
    assert_eq!(checks[0]["metric"]["origin"], "app");
    let failures = eventually("the failing socket", || {
        query("capwatch_syscall_failures_total{syscall=\"socket\",errno=\"EPERM\"}")
    });
    assert!(value(&failures[0]) >= 1.0, "{failures:?}");
    assert_eq!(failures[0]["metric"]["cause"], "capability", "the socket failed for want of CAP_NET_RAW: {failures:?}");
    let backend = eventually("the probe backend", || query("capwatch_probe_backend == 1"));
    assert_eq!(backend[0]["metric"]["backend"], test_backend().name());
    let build = eventually("build info", || query("capwatch_build_info"));
    assert_eq!(build[0]["metric"]["version"], env!("CARGO_PKG_VERSION"));
    let events = eventually("events by kind", || query("capwatch_events_total{kind=\"capability_check\"}"));
    assert!(value(&events[0]) >= 1.0);
    eventually("containers watched", || query("capwatch_containers_watched"));
    eventually("the scrape to be healthy", || query("up{job=\"capwatch\"} == 1"));

    assert_eq!(daemon.stop(libc::SIGTERM).0, Some(0));
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn the_kubernetes_manifests_validate_against_the_kubernetes_schemas() {
    let test = "the_kubernetes_manifests_validate_against_the_kubernetes_schemas";
    // `./x test` installs the validator (PyPI kubernetes-validate, schemas bundled) in target/.
    let local = repo("target/tools/venv/bin/kubernetes-validate");
    let validator = if local.is_file() { Some(local) } else { tool_available(test, "kubernetes-validate") };
    let Some(validator) = validator else { return };
    let manifests: Vec<PathBuf> = fs::read_dir(repo("deploy/kubernetes"))
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(!manifests.is_empty());
    let out = Command::new(validator)
        .args(["--strict", "--kubernetes-version", "1.31.0"])
        .args(&manifests)
        .output()
        .expect("kubernetes-validate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("passed for resource daemonset/capwatch"), "{stdout}");

    // The DaemonSet holds exactly the unit's capabilities, under Kubernetes' names.
    let daemonset = fs::read_to_string(repo("deploy/kubernetes/daemonset.yaml")).expect("daemonset");
    let added = daemonset.lines().find_map(|l| l.trim().strip_prefix("add: ")).expect("capabilities.add");
    let mut k8s: Vec<String> =
        added.trim_matches(['[', ']']).split(',').map(|c| format!("CAP_{}", c.trim().trim_matches('"'))).collect();
    let mut unit: Vec<String> = unit_capabilities().iter().map(ToString::to_string).collect();
    k8s.sort();
    unit.sort();
    assert_eq!(k8s, unit);
    assert!(daemonset.contains("hostPID: true"));
}
