//! capwatch's overhead, measured: the same workloads under each configuration in turn (nothing
//! attached, empty programs on capwatch's hooks, the capwatch daemon, bpftrace doing the same
//! job), several rounds, then the daemon under sustained load. Prints the measurements as one
//! JSON document on stdout; `cargo xtask bench` turns them into a table and a chart.
//!
//! Usage: cw-bench [--rounds N | --min-rounds N --max-rounds N --budget-seconds S] [--calls N]
//!                 [--sustain-seconds S]
//! Without `--rounds`, rounds go on past `--min-rounds` until every difference the report draws
//! on is settled (its median's 95% interval excludes zero and is narrower than the median), or
//! `--max-rounds` or the time budget is reached.
//! Needs root, BTF, cgroup2, the `capability:cap_capable` tracepoint and bpftrace; runs
//! `capwatch` and `cw-workload` from its own directory.

use std::{
    collections::hash_map::DefaultHasher,
    error::Error,
    fs,
    hash::{Hash, Hasher},
    io::{self, BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant, SystemTime},
};

use capwatch::{cgroup::Hierarchy, probe::Step};
use serde_json::{json, Value};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The bpftrace program a user would write for capwatch's job: capability checks by (cgroup,
/// capability, verdict), and syscalls failing with EPERM or EACCES by (cgroup, syscall).
const BPFTRACE_PROGRAM: &str = r#"BEGIN { printf("ready\n"); }
tracepoint:capability:cap_capable { @caps[cgroup, args->cap, args->ret] = count(); }
tracepoint:raw_syscalls:sys_exit /args->ret == -1 || args->ret == -13/ { @fails[cgroup, args->id] = count(); }"#;

const CONFIGS: [&str; 4] = ["bare", "floor", "capwatch", "bpftrace"];

/// The breakdown's configurations (`capwatch::probe::Step`), each measured on the one watched
/// workload whose path it stops on, in the same rounds.
fn configs() -> Vec<&'static str> {
    CONFIGS.into_iter().chain(Step::ALL.iter().map(|s| s.name)).collect()
}

/// CAP_SYS_ADMIN as the kernel numbers it: the timed check's and the sustained load's
/// (sethostname's).
const CAP_SYS_ADMIN: u64 = 21;
/// sethostname's x86_64 syscall number. The sustained load's process makes other CAP_SYS_ADMIN
/// checks too (the kernel asks at the mmap and mprotect of each thread's stack,
/// security/commoncap.c cap_vm_enough_memory): only sethostname's are the ones it counts.
const SYS_SETHOSTNAME: u64 = 170;

/// The rates the daemon is held to: exact at 1M checks/s, cheap at 100k checks/s.
const RATES: [u64; 2] = [1_000_000, 100_000];

/// Samples of the check → report delay.
const DELAY_SAMPLES: usize = 5;

struct Options {
    min_rounds: usize,
    max_rounds: usize,
    /// Seconds the alternating rounds may take before the bench stops adding rounds.
    budget_seconds: u64,
    calls: u64,
    sustain_seconds: u64,
}

/// The differences the report draws conclusions from, (workload, config, baseline): the rounds
/// go on until each is resolved.
const DECISIVE: [(&str, &str, &str); 7] = [
    ("cap_check", "floor", "bare"),
    ("cap_check", "capwatch", "bare"),
    ("cap_check", "bpftrace", "bare"),
    ("cap_check", "capwatch", "floor"),
    ("syscall", "floor", "bare"),
    ("syscall", "capwatch", "bare"),
    ("syscall", "capwatch", "floor"),
];

fn main() {
    if let Err(e) = run() {
        eprintln!("cw-bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let options = parse_args()?;
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root: it attaches eBPF programs and makes cgroups".into());
    }
    ensure_tracefs()?;
    let hierarchy = Hierarchy::find()?;
    let bench = Cgroup::make(&hierarchy, hierarchy.mount().join(format!("capwatch-bench-{}", std::process::id())))?;
    let watched = Cgroup::make(&hierarchy, bench.dir.join("watched"))?;
    let host = hierarchy.mount().to_path_buf();
    let state = std::env::temp_dir().join(format!("capwatch-bench-{}", std::process::id()));
    fs::create_dir_all(&state)?;

    let loadavg_start = loadavg();
    let started = capwatch::clock::rfc3339(SystemTime::now());
    let calls = options.calls.to_string();
    // The timed check is sethostname's in a UTS namespace of the workload's own, whose cost
    // barely varies; setuid's (commit_creds, and freeing the old credentials after an RCU grace
    // period) varies by more than a check costs. setuid(0) as root stays as a check capwatch
    // judges by its arguments (consequence.rs), under the four main configurations.
    let workloads: [(&str, &Path, [&str; 3]); 5] = [
        ("cap_check", &watched.dir, ["time", "sethostname", &calls]),
        ("syscall", &watched.dir, ["time", "getppid", &calls]),
        ("judged_check", &watched.dir, ["time", "setuid", &calls]),
        ("host_cap_check", &host, ["time", "sethostname", &calls]),
        ("host_syscall", &host, ["time", "getppid", &calls]),
    ];
    let mut samples = serde_json::Map::new();
    for (name, ..) in &workloads {
        let series: serde_json::Map<String, Value> = configs()
            .into_iter()
            .filter(|config| runs(config, name))
            .map(|config| (config.to_string(), json!([])))
            .collect();
        samples.insert(name.to_string(), Value::Object(series));
    }
    // Loaded once through the verifier; each step attaches in its turn.
    let mut steps = capwatch::probe::Steps::load(hierarchy.scope(hierarchy.mount(), false)?)?;
    let mut wall = samples.clone();
    let mut backend = String::new();
    let mut bpftrace_seen = Vec::new();
    let began = Instant::now();
    let mut round = 0;
    let stopped = loop {
        if round >= options.min_rounds {
            let open: Vec<String> = DECISIVE
                .iter()
                .filter(|(w, c, b)| !settled(&samples[*w][*c], &samples[*w][*b]))
                .map(|(w, c, b)| format!("{w} {c}−{b}"))
                .collect();
            if open.is_empty() {
                break "every difference the targets rest on is resolved, its 95% interval narrower than \
                       itself"
                    .to_string();
            }
            if round >= options.max_rounds || began.elapsed() >= Duration::from_secs(options.budget_seconds) {
                break format!(
                    "the round or time budget ran out ({round} rounds, {:.0} s) with {} not settled (resolved, and its interval narrower than itself)",
                    began.elapsed().as_secs_f64(),
                    open.join(", ")
                );
            }
        }
        // Each round starts with another configuration, so that slow drifts of the machine
        // (other work, frequency) do not always fall on the same one.
        let configs = configs();
        for i in 0..configs.len() {
            let config = configs[(round + i) % configs.len()];
            eprintln!("cw-bench: round {}: {config}", round + 1);
            let running = Running::start(config, &state, &mut steps)?;
            if let Running::Capwatch(daemon) = &running {
                backend = daemon.backend.clone();
            }
            for (name, cgroup, args) in workloads.iter().filter(|(name, ..)| runs(config, name)) {
                if let Running::Step = running {
                    // The keys' first occurrences, and their slots, as the daemon gives them the
                    // moment it learns a key: the timed loop then runs the check's path as it
                    // runs on a host where capwatch has been watching.
                    workload(cgroup, &[args[1], "1"])?;
                    steps.give_slots()?;
                }
                let output = timed_workload(cgroup, args)?;
                let ns =
                    field(&output, "ns_per_call").ok_or_else(|| format!("cw-workload {args:?} printed {output:?}"))?;
                let wall_ns = field(&output, "wall_ns_per_call")
                    .ok_or_else(|| format!("cw-workload {args:?} printed {output:?}"))?;
                samples[*name][config].as_array_mut().expect("array").push(json!(ns));
                wall[*name][config].as_array_mut().expect("array").push(json!(wall_ns));
            }
            if let Some(seen) = running.stop(watched.id, &mut steps)? {
                bpftrace_seen.push(seen);
            }
        }
        round += 1;
    };
    let alternating_seconds = began.elapsed().as_secs_f64();
    eprintln!("cw-bench: {stopped}");
    // bpftrace must have seen every check of the watched loop, or its numbers mean nothing.
    if let Some(short) = bpftrace_seen.iter().find(|&&n| n < options.calls) {
        return Err(format!(
            "bpftrace counted only {short} of {} checks: it was not attached during the loop",
            options.calls
        )
        .into());
    }

    eprintln!("cw-bench: the daemon under sustained load");
    let sustained = sustained(&hierarchy, &bench, &state, options.sustain_seconds)?;
    let result = json!({
        "date": started,
        "kernel": fs::read_to_string("/proc/sys/kernel/osrelease")?.trim(),
        "cpu": cpu_model(),
        "mitigations": mitigations(),
        "cores": std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        "loadavg_start": loadavg_start,
        "loadavg_end": loadavg(),
        "calls": options.calls,
        "rounds": round,
        "rounds_stopped": stopped,
        "alternating_seconds": alternating_seconds,
        "backend": backend,
        "bpftrace_version": command_output("bpftrace", &["--version"]).unwrap_or_default().trim(),
        "bpftrace_program": BPFTRACE_PROGRAM,
        "samples": samples,
        "wall": wall,
        "sustained": sustained,
    });
    drop(watched);
    drop(bench);
    let _ = fs::remove_dir_all(&state);
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}

fn parse_args() -> Result<Options> {
    let mut options =
        Options { min_rounds: 10, max_rounds: 150, budget_seconds: 420, calls: 200_000, sustain_seconds: 5 };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || -> Result<u64> {
            let text = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            Ok(text.parse().map_err(|_| format!("{flag}: {text:?} is not a number"))?)
        };
        match flag.as_str() {
            "--rounds" => {
                let rounds = value()?.max(1) as usize;
                (options.min_rounds, options.max_rounds) = (rounds, rounds);
            }
            "--min-rounds" => options.min_rounds = value()?.max(1) as usize,
            "--max-rounds" => options.max_rounds = value()?.max(1) as usize,
            "--budget-seconds" => options.budget_seconds = value()?,
            "--calls" => options.calls = value()?.max(1),
            "--sustain-seconds" => options.sustain_seconds = value()?.max(1),
            _ => {
                return Err(format!(
                    "unknown argument {flag:?}; usage: cw-bench [--rounds N | --min-rounds N --max-rounds N \
                     --budget-seconds S] [--calls N] [--sustain-seconds S]"
                )
                .into())
            }
        }
    }
    options.max_rounds = options.max_rounds.max(options.min_rounds);
    Ok(options)
}

/// Whether the median of the rounds' paired differences `config − baseline` is settled: its 95%
/// interval (order statistics, sign-test style) lies wholly on one side of zero, and is narrower
/// than the median itself. An interval that only excludes zero can still be too wide to hold a
/// target against: a noisy machine resolves +40 [+24, +122] in ten rounds.
fn settled(config: &Value, baseline: &Value) -> bool {
    let values = |v: &Value| -> Vec<f64> { v.as_array().into_iter().flatten().filter_map(Value::as_f64).collect() };
    let mut diffs: Vec<f64> = values(config).iter().zip(values(baseline)).map(|(c, b)| c - b).collect();
    if diffs.len() < 6 {
        return false;
    }
    diffs.sort_by(f64::total_cmp);
    let n = diffs.len() as f64;
    let half = 0.98 * n.sqrt();
    let lo = ((n / 2.0 - half).floor() as usize).clamp(1, diffs.len()) - 1;
    let hi = ((n / 2.0 + 1.0 + half).ceil() as usize).clamp(1, diffs.len()) - 1;
    let median = (diffs[(diffs.len() - 1) / 2] + diffs[diffs.len() / 2]) / 2.0;
    (diffs[lo] > 0.0 || diffs[hi] < 0.0) && diffs[hi] - diffs[lo] <= median.abs()
}

/// Whether `config` is measured on `workload`: every workload under the four main
/// configurations, each breakdown step on the watched workload whose path it stops on.
fn runs(config: &str, workload: &str) -> bool {
    match Step::ALL.iter().find(|s| s.name == config) {
        Some(step) => workload == if step.on_check() { "cap_check" } else { "syscall" },
        None => true,
    }
}

/// One configuration, running.
enum Running {
    Bare,
    Floor(capwatch::probe::Floor),
    Capwatch(Daemon),
    Bpftrace(Bpftrace),
    Step,
}

impl Running {
    fn start(config: &str, state: &Path, steps: &mut capwatch::probe::Steps) -> Result<Self> {
        Ok(match config {
            "bare" => Running::Bare,
            "floor" => Running::Floor(capwatch::probe::attach_floor()?),
            "capwatch" => Running::Capwatch(Daemon::start(state)?),
            "bpftrace" => Running::Bpftrace(Bpftrace::start()?),
            _ => {
                let step = Step::ALL.iter().find(|s| s.name == config).expect("configs() holds it");
                steps.attach(step)?;
                Running::Step
            }
        })
    }

    /// Stops it; for bpftrace, the CAP_SYS_ADMIN checks it counted in `cgroup_id`.
    fn stop(self, cgroup_id: u64, steps: &mut capwatch::probe::Steps) -> Result<Option<u64>> {
        match self {
            Running::Bare => Ok(None),
            Running::Step => {
                steps.detach();
                Ok(None)
            }
            Running::Floor(floor) => {
                drop(floor); // detaches the programs
                Ok(None)
            }
            Running::Capwatch(daemon) => daemon.stop().map(|_| None),
            Running::Bpftrace(bpftrace) => bpftrace.stop(cgroup_id).map(Some),
        }
    }
}

/// `capwatch daemon` with its default settings, apart from where it keeps its state and an
/// ephemeral metrics port (other daemons may run on this machine).
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    errors: mpsc::Receiver<String>,
    backend: String,
    state_dir: PathBuf,
}

impl Daemon {
    fn start(state: &Path) -> Result<Self> {
        let mut child = Command::new(sibling("capwatch")?)
            .args(["daemon", "--state-dir"])
            .arg(state)
            .env("CAPWATCH_CONFIG", "/dev/null")
            .env("CAPWATCH_METRICS_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let lines = lines_of(child.stdout.take().expect("piped"));
        let errors = lines_of(child.stderr.take().expect("piped"));
        let mut daemon = Self { child, lines, errors, backend: String::new(), state_dir: state.to_path_buf() };
        let started = daemon.wait_for(Duration::from_secs(30), |v| v["event"] == "started")?;
        daemon.backend = started["backend"].as_str().unwrap_or_default().to_string();
        Ok(daemon)
    }

    /// The first JSON line that satisfies `wanted`; lines before it are dropped.
    fn wait_for(&mut self, limit: Duration, wanted: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else { break };
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                if wanted(&value) {
                    return Ok(value);
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr: Vec<String> = self.errors.try_iter().collect();
        Err(format!("capwatch daemon did not start: {}", stderr.join("; ")).into())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then every line it wrote since start-up, as JSON.
    fn stop(mut self) -> Result<Vec<Value>> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait()?;
        if !status.success() {
            let stderr: Vec<String> = self.errors.try_iter().collect();
            return Err(format!("capwatch daemon exited with {status}: {}", stderr.join("; ")).into());
        }
        Ok(self.lines.iter().filter_map(|line| serde_json::from_str(&line).ok()).collect())
    }

    /// How many checks of `capability` made in `syscall` `capwatch report` shows denied in a
    /// container, if it shows any yet.
    fn reported_denied(&self, container: &str, capability: &str, syscall: &str) -> Option<u64> {
        let output = Command::new(sibling("capwatch").ok()?)
            .args(["report", &container[..12], "--format", "json", "--state-dir"])
            .arg(&self.state_dir)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let report: Value = serde_json::from_slice(&output.stdout).ok()?;
        report["capabilities"].as_array()?.iter().find(|c| c["capability"] == capability)?["denied"]["by_syscall"]
            .as_array()?
            .iter()
            .find(|s| s["syscall"] == syscall)?["count"]
            .as_u64()
    }
}

struct Bpftrace {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Bpftrace {
    fn start() -> Result<Self> {
        let mut child = Command::new("bpftrace")
            .args(["-e", BPFTRACE_PROGRAM])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("bpftrace: {e} (install Debian's bpftrace package)"))?;
        let lines = lines_of(child.stdout.take().expect("piped"));
        // BEGIN runs once every probe is attached.
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(line) if line == "ready" => return Ok(Self { child, lines }),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        Err("bpftrace did not attach within 60 s".into())
    }

    /// Stops it the way a user does (Ctrl-C), and reads its CAP_SYS_ADMIN count for `cgroup_id`
    /// from the maps it prints on the way out.
    fn stop(mut self, cgroup_id: u64) -> Result<u64> {
        // bpftrace 0.17 now and then lets a SIGINT pass without stopping: ask again.
        loop {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(2);
            while self.child.try_wait()?.is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if self.child.try_wait()?.is_some() {
                break;
            }
        }
        let key = format!("@caps[{cgroup_id}, {CAP_SYS_ADMIN}, 0]: ");
        Ok(self.lines.iter().find_map(|line| line.strip_prefix(&key).and_then(|n| n.trim().parse().ok())).unwrap_or(0))
    }
}

/// The daemon at sustained rates: in a fresh container cgroup per rate, `cw-workload` makes
/// CAP_SYS_ADMIN checks at the rate, sethostname's as uid 1000, so that each is denied, fails
/// its call with EPERM and is counted by `capwatch report`; the daemon's CPU time over the
/// window, its peak RSS, whether its totals equal the checks made, what it reported lost, and
/// how long a check takes to appear in `capwatch report`.
fn sustained(hierarchy: &Hierarchy, bench: &Cgroup, state: &Path, seconds: u64) -> Result<Value> {
    let daemon = Daemon::start(&state.join("sustained"))?;
    // One worker per CPU, each making its share of the rate: one thread alone may not reach it.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let mut rates = Vec::new();
    let mut containers = Vec::new();
    for rate in RATES {
        let id = container_id(rate);
        let cgroup = Cgroup::make(hierarchy, bench.dir.join(&id))?;
        let cpu_before = cpu_ns(daemon.pid());
        let start = Instant::now();
        let output = workload(
            &cgroup.dir,
            &[
                "as-user",
                "1000",
                "threads",
                &workers.to_string(),
                "paced",
                &(rate / workers).to_string(),
                &seconds.to_string(),
                "sethostname-denied",
            ],
        )?;
        let wall = start.elapsed();
        let cpu = cpu_ns(daemon.pid()).saturating_sub(cpu_before);
        let made = fields(&output, "calls").sum::<f64>() as u64;
        if made == 0 {
            return Err(format!("cw-workload paced printed {output:?}").into());
        }
        let behind_ms = fields(&output, "behind_ms").fold(0.0, f64::max);
        // The store has every check once a drain after the loop has been written.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut reported = daemon.reported_denied(&id, "CAP_SYS_ADMIN", "sethostname");
        while reported != Some(made) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            reported = daemon.reported_denied(&id, "CAP_SYS_ADMIN", "sethostname");
        }
        rates.push(json!({
            "rate": rate,
            "workers": workers,
            "seconds": seconds,
            "calls": made,
            "achieved_rate": made as f64 / wall.as_secs_f64(),
            "behind_ms": behind_ms,
            "reported": reported,
            "daemon_cpu_share": cpu as f64 / wall.as_nanos() as f64,
        }));
        containers.push((id, cgroup, made));
    }

    let mut delays = Vec::new();
    for i in 0..DELAY_SAMPLES {
        let id = container_id(1000 + i as u64);
        let cgroup = Cgroup::make(hierarchy, bench.dir.join(&id))?;
        // Taken before the check (the process start adds a millisecond at most): an upper bound.
        let start = Instant::now();
        workload(&cgroup.dir, &["as-user", "1000", "setuid-tries", "1"])?;
        let deadline = start + Duration::from_secs(10);
        while daemon.reported_denied(&id, "CAP_SETUID", "setuid").is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        delays.push(json!(start.elapsed().as_secs_f64() * 1000.0));
        // Spread the samples over the drain's second.
        std::thread::sleep(Duration::from_millis(370));
        containers.push((id, cgroup, 1));
    }

    let peak_rss_kib = status_field(daemon.pid(), "VmHWM:");
    let rss_kib = status_field(daemon.pid(), "VmRSS:");
    let lines = daemon.stop()?;
    let lost: Vec<&Value> = lines.iter().filter(|v| v["event"] == "loss").collect();
    let lost_total: u64 = lost.iter().map(|v| v["added"].as_u64().unwrap_or(0)).sum();
    // The final totals, by the kernel's cgroup id.
    let totals = |cgroup_id: u64| -> u64 {
        lines
            .iter()
            .filter(|v| {
                v["message"] == "totals"
                    && v["cgroup_id"] == cgroup_id
                    && v["cap"] == CAP_SYS_ADMIN
                    && v["syscall_nr"] == SYS_SETHOSTNAME
                    && v["verdict"] == "denied"
            })
            .map(|v| v["count"].as_u64().unwrap_or(0))
            .sum()
    };
    for (rate, (_, cgroup, _)) in rates.iter_mut().zip(&containers) {
        rate["totals"] = json!(totals(cgroup.id));
    }
    Ok(json!({
        "rates": rates,
        "loss_lines": lost,
        "lost": lost_total,
        "peak_rss_kib": peak_rss_kib,
        "rss_kib": rss_kib,
        "report_delay_ms": delays,
    }))
}

/// A cgroup made for the bench, removed when dropped.
struct Cgroup {
    dir: PathBuf,
    id: u64,
}

impl Cgroup {
    fn make(hierarchy: &Hierarchy, dir: PathBuf) -> Result<Self> {
        fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let id = hierarchy.scope(&dir, true)?.root_id;
        Ok(Self { dir, id })
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Its processes have exited; the kernel may take a moment to notice.
        for _ in 0..50 {
            match fs::remove_dir(&self.dir) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => std::thread::sleep(Duration::from_millis(20)),
                _ => return,
            }
        }
    }
}

/// A Docker-shaped container id (64 hex digits): capwatch names a cgroup with one as a
/// container from its path alone.
fn container_id(seed: u64) -> String {
    let mut id = String::new();
    for part in 0..4u64 {
        let mut hasher = DefaultHasher::new();
        (std::process::id(), seed, part, SystemTime::now()).hash(&mut hasher);
        id.push_str(&format!("{:016x}", hasher.finish()));
    }
    id
}

/// Runs `cw-workload args` inside `cgroup` and returns its stdout.
fn workload(cgroup: &Path, args: &[&str]) -> Result<String> {
    run_workload(cgroup, args, None)
}

/// A timed loop, on the last CPU the bench may use, under every configuration alike. bpftrace
/// opens its tracepoints' perf events on CPU 0 (libbpf: pid -1, cpu 0). On that CPU alone each
/// hit goes on from the program to perf's delivery of the event (kernel/events/core.c,
/// perf_trace_run_bpf_submit, perf_tp_event), about 300 ns more on this kind of machine: a loop
/// the scheduler put there or elsewhere made bpftrace's cost twofold from round to round.
/// Elsewhere is what most of a host's processes see.
fn timed_workload(cgroup: &Path, args: &[&str]) -> Result<String> {
    run_workload(cgroup, args, Some(last_cpu()?))
}

/// The highest-numbered CPU this process may run on.
fn last_cpu() -> Result<usize> {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Err(format!("sched_getaffinity: {}", io::Error::last_os_error()).into());
    }
    (0..libc::CPU_SETSIZE as usize)
        .rev()
        .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .ok_or_else(|| "sched_getaffinity: no CPU".into())
}

fn run_workload(cgroup: &Path, args: &[&str], cpu: Option<usize>) -> Result<String> {
    let procs = std::ffi::CString::new(cgroup.join("cgroup.procs").into_os_string().into_encoded_bytes())?;
    let mut command = Command::new(sibling("cw-workload")?);
    command.args(args);
    let pinned = cpu.map(|cpu| {
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(cpu, &mut set) };
        set
    });
    // SAFETY: between fork and exec only raw syscalls on memory prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            // Ahead of other work on the machine, so that it takes the CPU from the loop less
            // often (it still shows in wall time, and in what it leaves in the caches).
            libc::setpriority(libc::PRIO_PROCESS, 0, -20);
            if let Some(set) = &pinned {
                if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), set) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0\n".as_ptr().cast(), 2) != 2 {
                return Err(io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
    let output = command.output()?;
    if !output.status.success() {
        return Err(format!(
            "cw-workload {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stdout)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `name value` from a workload's output.
fn field(output: &str, name: &str) -> Option<f64> {
    fields(output, name).next()
}

/// Every value printed as `name VALUE`, one per worker that printed it.
fn fields<'a>(output: &'a str, name: &'a str) -> impl Iterator<Item = f64> + 'a {
    output.lines().filter_map(move |line| line.strip_prefix(name)?.trim().parse().ok())
}

/// A program of this workspace, next to this one.
fn sibling(name: &str) -> Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    if !path.exists() {
        return Err(format!("{} is not built (cargo build --release --bins)", path.display()).into());
    }
    Ok(path)
}

fn lines_of(pipe: impl io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(std::result::Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// CPU time of every thread of a process, in ns (the scheduler's own accounting).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// A `/proc/<pid>/status` value in kB.
fn status_field(pid: u32, name: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| line.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse().ok())
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_string()))
        })
        .unwrap_or_default()
}

/// The kernel's mitigations that make every call and return in it dearer (the return-stack and
/// branch-target ones), as `/sys/devices/system/cpu/vulnerabilities` names them: the floor and
/// every helper call an eBPF program makes pay for them, so they tell runs on other CPUs apart.
fn mitigations() -> String {
    ["spec_rstack_overflow", "retbleed", "spectre_v2"]
        .iter()
        .filter_map(|name| {
            let state = fs::read_to_string(Path::new("/sys/devices/system/cpu/vulnerabilities").join(name)).ok()?;
            Some(format!("{name}: {}", state.trim()))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// bpftrace finds tracepoints through tracefs, which a host need not have mounted.
fn ensure_tracefs() -> Result<()> {
    let tracing = Path::new("/sys/kernel/tracing");
    if tracing.join("events").exists() {
        return Ok(());
    }
    let status = Command::new("mount").args(["-t", "tracefs", "nodev"]).arg(tracing).status()?;
    if !status.success() {
        return Err(format!("mounting tracefs at {} failed ({status})", tracing.display()).into());
    }
    Ok(())
}
