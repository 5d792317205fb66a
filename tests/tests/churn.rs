//! A busy host: many short-lived containers, some at once, under one daemon. Every one is listed
//! with exact counts; the kernel's maps keep only live cgroups; the daemon's memory and
//! descriptors stay flat; the store grows linearly and retention ages it out. Needs root, BPF and
//! Docker; in CI it must run. `CAPWATCH_CHURN` sets how many containers (1,000 by default).

use std::{
    path::Path,
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use capwatch_tests::{capwatch, container_name, docker_available, json, tempdir, DockerEnv, Running};
use serde_json::Value;

/// Containers at once.
const AT_ONCE: usize = 4;
/// Each container: setuid(0) three times as uid 1000, each a denied check and a failure.
const WORKLOAD: [&str; 4] = ["as-user", "1000", "setuid-tries", "3"];

#[test]
fn a_thousand_short_lived_containers_lose_nothing_and_leak_nothing() {
    let Some(env) = docker_available("a_thousand_short_lived_containers_lose_nothing_and_leak_nothing") else { return };
    let total: usize = std::env::var("CAPWATCH_CHURN").ok().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let state = tempdir("churn");
    let mut daemon = start_daemon(&env, &state, None);
    let metrics = metrics_address(&mut daemon);
    let pid = daemon.child.id();

    let names: Vec<String> = (0..total).map(|_| container_name("churn")).collect();
    let (warm, half) = (total / 10, total / 2);
    run_all(&env, &names[..warm]);
    settle(&metrics);
    let (rss_warm, fds_warm) = (rss_kib(pid), fds(pid));
    run_all(&env, &names[warm..half]);
    settle(&metrics);
    let (rss_half, fds_half) = (rss_kib(pid), fds(pid));
    let entries = map_entries(&metrics);
    // A stopped daemon's store is whole in its database file (SQLite folds the WAL in at close).
    daemon.stop(libc::SIGTERM);
    let store_half = store_bytes(&state);

    let mut daemon = start_daemon(&env, &state, None);
    let metrics = metrics_address(&mut daemon);
    run_all(&env, &names[half..]);
    settle(&metrics);
    let entries_end = map_entries(&metrics);
    daemon.stop(libc::SIGTERM);
    let store_end = store_bytes(&state);

    eprintln!(
        "churn: {total} containers, {AT_ONCE} at once; daemon RSS {rss_warm} KiB after {warm} containers, {rss_half} KiB \
         after {half}; descriptors {fds_warm} then {fds_half}; store {store_half} bytes after {half}, {store_end} after \
         {total}; kernel map entries {entries:?} and {entries_end:?}"
    );
    for entries in [&entries, &entries_end] {
        assert!(entries.iter().all(|(_, n)| *n == 0), "the kernel maps hold only live cgroups: {entries:?}");
    }
    assert!(fds_half <= fds_warm + 2, "descriptors grew from {fds_warm} to {fds_half}");
    assert!(rss_half <= rss_warm + 4 * 1024, "RSS grew from {rss_warm} KiB to {rss_half} KiB");
    let ratio = (store_end as f64 / total as f64) / (store_half as f64 / half as f64);
    assert!(
        (0.7..1.3).contains(&ratio),
        "the store grows linearly: {store_half} bytes for {half}, {store_end} for {total}"
    );

    let (code, ps, stderr) = capwatch(&["ps", "--all", "--state-dir", state.to_str().expect("utf-8")]);
    assert_eq!(code, Some(0), "{stderr}");
    let listed: Vec<&str> = ps.lines().filter(|l| l.contains("cw-churn")).collect();
    assert_eq!(listed.len(), total, "every container is listed");
    let wrong: Vec<String> = names
        .iter()
        .filter_map(|name| {
            let count = denied_setuid(&state, name);
            (count != Some(3)).then(|| format!("{name}: {count:?}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "each container made exactly 3 denied setuid checks: {} wrong, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );

    // Retention: a daemon keeping no days forgets every exited container at its start.
    let daemon = start_daemon(&env, &state, Some("0"));
    daemon.stop(libc::SIGTERM);
    let (_, ps, _) = capwatch(&["ps", "--all", "--state-dir", state.to_str().expect("utf-8")]);
    assert_eq!(ps.lines().filter(|l| l.contains("cw-churn")).count(), 0, "retention ages them out:\n{ps}");
}

fn start_daemon(env: &DockerEnv, state: &Path, retention_days: Option<&str>) -> Running {
    let state_dir = state.to_str().expect("utf-8");
    let mut args = vec!["daemon", "--state-dir", state_dir, "--docker-socket", &env.socket, "--cgroup-root", "/docker"];
    if let Some(days) = retention_days {
        args.extend(["--retention-days", days]);
    }
    let mut daemon = Running::start(&args);
    daemon.wait_for("event=docker_connected", |l| json(l)["event"] == "docker_connected");
    daemon
}

/// Runs the containers, `AT_ONCE` at a time.
fn run_all(env: &DockerEnv, names: &[String]) {
    let next = AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..AT_ONCE {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(name) = names.get(i) else { break };
                let mut args = vec!["run", "--rm", "--network", "none", "--name", name.as_str(), env.image.as_str()];
                args.extend(["cw-workload"].iter().chain(WORKLOAD.iter()).copied());
                let out = env.try_docker(&args);
                assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
            });
        }
    });
}

/// Waits until the kernel side holds nothing of exited containers' cgroups any more.
fn settle(metrics: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while map_entries(metrics).iter().any(|(_, n)| *n > 0) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(500));
    }
    thread::sleep(Duration::from_secs(2));
}

/// The metrics endpoint's address, from the line the daemon logged at its start.
fn metrics_address(daemon: &mut Running) -> String {
    let logged = daemon.seen.iter().find(|l| json(l)["event"] == "metrics_listening").cloned();
    let line = logged
        .unwrap_or_else(|| daemon.wait_for("event=metrics_listening", |l| json(l)["event"] == "metrics_listening"));
    json(&line)["address"].as_str().expect("address").to_string()
}

/// `capwatch_kernel_map_entries` by map, from the daemon's endpoint.
fn map_entries(address: &str) -> Vec<(String, u64)> {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(address) else { return vec![("unreachable".into(), 1)] };
    let _ = write!(stream, "GET /metrics HTTP/1.0\r\nHost: capwatch\r\n\r\n");
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body.lines()
        .filter_map(|l| l.strip_prefix("capwatch_kernel_map_entries{map=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(map, n)| (map.to_string(), n.trim().parse().unwrap_or(u64::MAX)))
        .collect()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the daemon's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(Iterator::count).unwrap_or(0)
}

fn store_bytes(state: &Path) -> u64 {
    ["capwatch.db", "capwatch.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(state.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

fn denied_setuid(state: &Path, name: &str) -> Option<u64> {
    let (code, out, _) = capwatch(&["report", name, "--format", "json", "--state-dir", state.to_str()?]);
    (code == Some(0)).then_some(())?;
    let report: Value = serde_json::from_str(&out).ok()?;
    report["capabilities"].as_array()?.iter().find(|c| c["capability"] == "CAP_SETUID")?["denied"]["count"].as_u64()
}
