//! `cargo xtask bench`: what capwatch costs the host, beside the floor (empty programs on its
//! hooks) and beside bpftrace doing the same job, measured in one run by `cw-bench`; printed as
//! a table and written to docs/performance.md with a chart, docs/performance.png, and the raw
//! measurements, docs/performance.json.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use serde_json::Value;

use crate::apt::apt;

/// Debian packages the bench needs: bpftrace to compare with, a font for the chart's text.
const PACKAGES: [(&str, &str); 2] = [("bpftrace", "/usr/bin/bpftrace"), ("fonts-dejavu-core", FONT)];
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// The workloads, as cw-bench names them, and how the table names them.
const WORKLOADS: [(&str, &str); 5] = [
    ("cap_check", "sethostname to the same name, own UTS namespace, watched cgroup (1 capability check + sys_exit)"),
    ("syscall", "getppid, watched cgroup (sys_exit only)"),
    (
        "judged_check",
        "setuid(0) as root, watched cgroup (1 capability check capwatch judges by the call's arguments + sys_exit)",
    ),
    ("host_cap_check", "sethostname, own UTS namespace, host process (root cgroup, not watched)"),
    ("host_syscall", "getppid, host process (root cgroup, not watched)"),
];
const CONFIGS: [&str; 4] = ["bare", "floor", "capwatch", "bpftrace"];

/// The breakdown: per watched workload, the configurations that stop after each step of its
/// path (capwatch::probe::Step), from the floor to the daemon, and what each step adds.
const BREAKDOWN: [(&str, &[(&str, &str)]); 2] = [
    (
        "cap_check",
        &[
            ("floor", "the floor: empty programs"),
            ("to_scope", "scope test (the current task, the cgroup id in four loads, a compare)"),
            (
                "to_syscall",
                "syscall number (`orig_ax`: from `task->stack` through `bpf_rdonly_cast`, a move, where \
                 the kernel has it, else `bpf_task_pt_regs`)",
            ),
            (
                "to_judge",
                "credential flags (`real_cred`, `cred->user_ns`) and the syscall's arguments \
                 (`consequence::judge`, `port`)",
            ),
            ("to_origin", "origin lookup (`origin::current`)"),
            ("to_hash", "key lookup and add in `CW_CAPS` (a key without a slot)"),
            ("to_key", "the key counted in its slot (`CW_CAP_SLOTS`, `CW_CAP_COUNTS`): the whole check"),
            ("capwatch", "the daemon: all of capwatch's programs attached"),
        ],
    ),
    (
        "syscall",
        &[
            ("floor", "the floor: empty programs"),
            ("exit_args", "`sys_exit`'s arguments read, the EPERM/EACCES test"),
            ("exit_all", "pending denials (`pending::take`) and the failure test"),
            ("exit_calls", "the syscall set (calls.rs, a per-CPU cache hit): the whole exit"),
            ("capwatch", "the daemon: all of capwatch's programs attached"),
        ],
    ),
];

/// The targets the benchmark holds capwatch to.
const CAP_OVER_FLOOR_NS: f64 = 30.0;
const CAP_VS_BPFTRACE: f64 = 0.15;
const SYSCALL_VS_FLOOR: f64 = 1.1;
const RSS_LIMIT_KIB: f64 = 30.0 * 1024.0;
const CPU_LIMIT: f64 = 0.01;
const DELAY_LIMIT_MS: f64 = 1000.0;

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    if !running_as_root() {
        bail!("bench needs root: it attaches eBPF programs and makes cgroups (sudo ./x bench)");
    }
    let docs = root.join("docs");
    let raw = docs.join("performance.json");
    // `--render` rewrites the page and the chart from the last run's measurements.
    if args != ["--render"] {
        measure(root, args, &raw)?;
    }
    let run: Value = serde_json::from_slice(&fs::read(&raw).with_context(|| format!("reading {}", raw.display()))?)
        .with_context(|| format!("{} is not cw-bench's JSON", raw.display()))?;
    let results = Results::from(&run)?;
    let markdown = results.markdown(&run);
    println!("{markdown}");
    fs::write(docs.join("performance.md"), &markdown).context("writing docs/performance.md")?;
    results.chart(&docs.join("performance.png"))?;
    eprintln!("bench: wrote docs/performance.md, docs/performance.png and docs/performance.json");
    Ok(())
}

/// Builds and runs cw-bench, keeping its measurements in `raw`.
fn measure(root: &Path, args: &[String], raw: &Path) -> Result<()> {
    ensure_packages()?;
    crate::cargo(&["build", "--release", "--bins"], &[])?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bench = target.join("release").join("cw-bench");
    let output = Command::new(&bench)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", bench.display()))?;
    if !output.status.success() {
        bail!("cw-bench failed ({})", output.status);
    }
    serde_json::from_slice::<Value>(&output.stdout).context("reading cw-bench's JSON")?;
    fs::write(raw, &output.stdout).with_context(|| format!("writing {}", raw.display()))
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn ensure_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().filter(|(_, file)| !Path::new(file).exists()).map(|(p, _)| *p).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("bench: installing {}", missing.join(" "));
    apt(&["update", "-qq"])?;
    apt(&[&["install", "-y", "-qq", "--no-install-recommends"][..], &missing].concat())
}

/// Order statistics of one series of rounds.
#[derive(Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
    q1: f64,
    q3: f64,
    /// The median's 95% interval (order statistics).
    lo: f64,
    hi: f64,
    n: usize,
}

impl Spread {
    fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let (lo, hi) = median_interval(n);
        Some(Self {
            median: median(&sorted),
            min: sorted[0],
            max: sorted[n - 1],
            q1: quantile(&sorted, 0.25),
            q3: quantile(&sorted, 0.75),
            lo: sorted[lo],
            hi: sorted[hi],
            n,
        })
    }

    /// Whether the median is told from zero: its 95% interval lies on one side.
    fn resolved(&self) -> bool {
        self.n >= 6 && (self.lo > 0.0 || self.hi < 0.0)
    }

    /// "12.3 (IQR 11.9–12.8, 11.0–15.1)"
    fn cell(&self) -> String {
        format!("{:.1} (IQR {:.1}–{:.1}; {:.1}–{:.1})", self.median, self.q1, self.q3, self.min, self.max)
    }

    /// "+12.3 [+10.1, +14.0]"
    fn difference(&self) -> String {
        format!("{:+.1} [{:+.1}, {:+.1}]", self.median, self.lo, self.hi)
    }
}

/// Indices (0-based, into sorted values) of the 95% interval of a median of `n` values: the
/// sign test's order statistics, n/2 ∓ 0.98·√n.
fn median_interval(n: usize) -> (usize, usize) {
    let (nf, half) = (n as f64, 0.98 * (n as f64).sqrt());
    let lo = ((nf / 2.0 - half).floor() as usize).clamp(1, n) - 1;
    let hi = ((nf / 2.0 + 1.0 + half).ceil() as usize).clamp(1, n) - 1;
    (lo, hi)
}

/// Linear interpolation between order statistics of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    match sorted.get(i + 1) {
        Some(next) => sorted[i] + (next - sorted[i]) * frac,
        None => sorted[i],
    }
}

/// The two clocks each loop is timed by.
#[derive(Clone, Copy, PartialEq)]
enum Clock {
    /// The calling thread's CPU time: the eBPF programs run in it; other processes do not.
    Cpu,
    /// Wall time: also what other work on the machine took from the loop.
    Wall,
}

impl Clock {
    fn key(self) -> &'static str {
        match self {
            Clock::Cpu => "samples",
            Clock::Wall => "wall",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Clock::Cpu => "thread CPU time",
            Clock::Wall => "wall time",
        }
    }
}

struct Results<'a> {
    run: &'a Value,
}

impl<'a> Results<'a> {
    fn from(run: &'a Value) -> Result<Self> {
        for (workload, _) in WORKLOADS {
            for config in CONFIGS {
                if Self::series_of(run, Clock::Cpu, workload, config).is_empty() {
                    bail!("no samples of {workload} under {config}");
                }
            }
        }
        Ok(Self { run })
    }

    fn series_of(run: &Value, clock: Clock, workload: &str, config: &str) -> Vec<f64> {
        run[clock.key()][workload][config].as_array().into_iter().flatten().filter_map(Value::as_f64).collect()
    }

    fn series(&self, clock: Clock, workload: &str, config: &str) -> Vec<f64> {
        Self::series_of(self.run, clock, workload, config)
    }

    /// ns per call of `config` in `workload`, over the rounds.
    fn ns(&self, clock: Clock, workload: &str, config: &str) -> Option<Spread> {
        Spread::of(&self.series(clock, workload, config))
    }

    /// `config − baseline`, paired within each round (so that drift between rounds cancels).
    fn diff(&self, clock: Clock, workload: &str, config: &str, baseline: &str) -> Option<Spread> {
        let (ours, base) = (self.series(clock, workload, config), self.series(clock, workload, baseline));
        Spread::of(&ours.iter().zip(&base).map(|(c, b)| c - b).collect::<Vec<_>>())
    }

    /// Where the cost lies: programs that stop after each step, measured in the same rounds.
    fn breakdown(&self, md: &mut String) {
        let _ = writeln!(md, "## Where the cost lies\n");
        let _ = writeln!(
            md,
            "capwatch's own code, built into programs that stop after each step of its path \
             (`capwatch-ebpf/src/steps.rs`, `cap::check_until`), attached with the floor's empty \
             program on the other hook the loop passes, and measured in the same alternating rounds, \
             on the watched workload only. `over the floor` is the paired difference to the floor in \
             the same round; `this step` the paired difference to the step before it. Thread CPU time, \
             ns per call.\n"
        );
        for (workload, steps) in BREAKDOWN {
            let label = WORKLOADS.iter().find(|(w, _)| *w == workload).map_or(workload, |(_, l)| l);
            let _ = writeln!(md, "{label}:\n");
            let _ =
                writeln!(md, "| up to | ns per call: median (IQR; min–max) | over the floor [95%] | this step [95%] |");
            let _ = writeln!(md, "|---|---:|---:|---:|");
            let mut previous: Option<&str> = None;
            for (config, what) in steps.iter() {
                let Some(ns) = self.ns(Clock::Cpu, workload, config) else {
                    let _ = writeln!(md, "| {what} | not measured | | |");
                    continue;
                };
                let shown = |d: Option<Spread>| {
                    d.map_or_else(String::new, |d| {
                        format!("{}{}", d.difference(), if d.resolved() { "" } else { " not resolved" })
                    })
                };
                let over = if *config == "floor" {
                    String::new()
                } else {
                    shown(self.diff(Clock::Cpu, workload, config, "floor"))
                };
                let step = match previous {
                    Some(before) if before != "floor" => shown(self.diff(Clock::Cpu, workload, config, before)),
                    Some(_) => over.clone(),
                    None => String::new(),
                };
                let _ = writeln!(md, "| {what} | {} | {over} | {step} |", ns.cell());
                previous = Some(config);
            }
            let _ = writeln!(md);
        }
    }

    /// Added over bare, CPU time, median of the paired differences.
    fn added(&self, workload: &str, config: &str) -> f64 {
        self.diff(Clock::Cpu, workload, config, "bare").map_or(f64::NAN, |s| s.median)
    }

    fn markdown(&self, run: &Value) -> String {
        let mut md = String::new();
        let text = |key: &str| run[key].as_str().unwrap_or("?").to_string();
        let _ = writeln!(md, "# What capwatch costs\n");
        let _ = writeln!(
            md,
            "Measured by `cargo xtask bench` on {} — kernel {}, {} ({} cores; {}); capability backend \
             `{}`; {} rounds of {} calls per workload and configuration ({} rounds took {:.0} s; the rounds \
             stopped because {}); load average {} at the start, {} at the end. Rerun it whenever the \
             kernel side changes.\n",
            text("date").get(..10).unwrap_or("?"),
            text("kernel"),
            text("cpu"),
            run["cores"],
            text("mitigations"),
            text("backend"),
            run["rounds"],
            run["calls"],
            run["rounds"],
            run["alternating_seconds"].as_f64().unwrap_or(f64::NAN),
            text("rounds_stopped"),
            text("loadavg_start"),
            text("loadavg_end"),
        );
        let _ = writeln!(md, "![added ns per call, by configuration](performance.png)\n");
        let _ = writeln!(md, "## How to read the numbers\n");
        let _ = writeln!(
            md,
            "Configurations alternate within each round, each round starting with another one: **bare** \
             nothing attached; **floor** empty programs on exactly capwatch's hooks (`tp_btf/cap_capable`, \
             `sys_exit`, `sched_process_fork/exec/exit`, `cgroup_attach_task`); **capwatch** the daemon \
             with its default settings; **bpftrace** {} counting the same things (below). Each loop is \
             timed twice: by its own thread's CPU time, which includes the eBPF programs (they run in \
             the calling thread) but not the time other processes took the CPU from it, and by wall \
             time, which includes that too.\n\n\
             The capability check the targets are measured on is sethostname's, to the name the \
             workload's own UTS namespace already has: a granted CAP_SYS_ADMIN check in a call whose \
             own cost barely varies. setuid(0)'s cost varies from call to call by more than a check \
             costs (it commits new credentials and frees the old ones after an RCU grace period); it \
             is measured as `judged_check`, a check whose arguments capwatch reads to judge it. Every \
             timed loop runs on the last CPU: bpftrace opens its tracepoints' perf events on CPU 0, \
             where each hit also goes through perf's delivery of the event, some 300 ns more than on \
             any other CPU.\n\n\
             Each cell gives the median over the rounds, then the interquartile range (IQR) and the \
             fastest–slowest round. A cost *added* by a configuration is the median of each round's \
             difference to the same round's run it is compared with, and beside it, in brackets, the \
             95% interval of that median (order statistics: n/2 ∓ 0.98·√n). Rounds are added until \
             every difference the targets rest on has an interval on one side of zero and narrower \
             than the difference, within a time budget; a difference whose interval still holds zero is marked **not resolved**: the \
             spread is larger than the difference, and the run cannot tell it from nothing.\n",
            text("bpftrace_version"),
        );
        for clock in [Clock::Cpu, Clock::Wall] {
            let _ = writeln!(md, "## ns per call, {}\n", clock.name());
            let _ = writeln!(
                md,
                "| workload | configuration | ns per call: median (IQR; min–max) | added over bare [95%] |"
            );
            let _ = writeln!(md, "|---|---|---:|---:|");
            for (workload, label) in WORKLOADS {
                for config in CONFIGS {
                    let Some(ns) = self.ns(clock, workload, config) else { continue };
                    let added = match config {
                        "bare" => String::new(),
                        _ => self.diff(clock, workload, config, "bare").map_or_else(String::new, |d| d.difference()),
                    };
                    let name = if config == "bare" { label } else { "" };
                    let _ = writeln!(md, "| {name} | {config} | {} | {added} |", ns.cell());
                }
            }
            let _ = writeln!(md);
        }
        let _ = writeln!(md, "## The differences, and whether the run resolves them\n");
        let _ = writeln!(
            md,
            "Paired within each round, ns per call. Resolved: the 95% interval of the median lies on one \
             side of zero.\n"
        );
        let _ = writeln!(
            md,
            "| workload | difference | CPU: median [95%] (IQR) | resolved | wall: median [95%] (IQR) | resolved |"
        );
        let _ = writeln!(md, "|---|---|---:|---|---:|---|");
        let mut unresolved = Vec::new();
        for (workload, _) in WORKLOADS {
            for (config, baseline) in
                [("floor", "bare"), ("capwatch", "bare"), ("bpftrace", "bare"), ("capwatch", "floor")]
            {
                let mut line = format!("| {workload} | {config} − {baseline} |");
                for clock in [Clock::Cpu, Clock::Wall] {
                    let Some(d) = self.diff(clock, workload, config, baseline) else { continue };
                    let resolved = d.resolved();
                    if !resolved && clock == Clock::Cpu {
                        unresolved.push(format!("{workload} {config} − {baseline}"));
                    }
                    let _ = write!(
                        line,
                        " {} (IQR {:+.1}–{:+.1}) | {} |",
                        d.difference(),
                        d.q1,
                        d.q3,
                        if resolved { "yes" } else { "**not resolved**" }
                    );
                }
                let _ = writeln!(md, "{line}");
            }
        }
        if unresolved.is_empty() {
            let _ = writeln!(md, "\nEvery difference above is resolved in CPU time.\n");
        } else {
            let _ = writeln!(
                md,
                "\nNot resolved in CPU time (the spread is larger than the difference; more rounds or a \
                 quieter machine would tell): {}.\n",
                unresolved.join("; ")
            );
        }

        self.breakdown(&mut md);

        let sustained = &run["sustained"];
        let _ = writeln!(md, "\n## The daemon under sustained load\n");
        let _ = writeln!(
            md,
            "One daemon, `cw-workload as-user 1000 threads WORKERS paced RATE/WORKERS SECONDS \
             sethostname-denied` in a container-named cgroup per rate, one worker per CPU ({}): \
             sethostname as uid 1000, each call a denied CAP_SYS_ADMIN check and a syscall failing \
             with EPERM. `reported` is the count of CAP_SYS_ADMIN denied in sethostname in \
             `capwatch report` (`denied.by_syscall`), `totals` the daemon's final totals line for \
             them; both must equal the checks made. (The process makes a few CAP_SYS_ADMIN checks \
             of its own besides, at the mmap and mprotect of each thread's stack, which the report \
             counts under those calls.) CPU is the daemon's (all threads) over the loop's wall time.\n",
            sustained["rates"][0]["workers"].as_u64().map_or("one".to_string(), |n| n.to_string()),
        );
        let _ = writeln!(md, "| rate (checks/s) | achieved | checks made | reported | totals | daemon CPU |");
        let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|");
        for rate in sustained["rates"].as_array().into_iter().flatten() {
            let _ = writeln!(
                md,
                "| {} | {:.0} | {} | {} | {} | {:.2}% of a core |",
                rate["rate"],
                rate["achieved_rate"].as_f64().unwrap_or(0.0),
                rate["calls"],
                rate["reported"],
                rate["totals"],
                rate["daemon_cpu_share"].as_f64().unwrap_or(0.0) * 100.0,
            );
        }
        let delays: Vec<f64> =
            sustained["report_delay_ms"].as_array().into_iter().flatten().filter_map(Value::as_f64).collect();
        let peak_kib = sustained["peak_rss_kib"].as_f64().unwrap_or(f64::NAN);
        let _ = writeln!(
            md,
            "\nEvents lost (the daemon's `loss` lines): {}. Peak RSS (VmHWM): {:.1} MiB. Check → `capwatch report` \
             (a denied setuid): {} ms (each from before the checking process started until the report showed it).\n",
            sustained["lost"],
            peak_kib / 1024.0,
            delays.iter().map(|d| format!("{d:.0}")).collect::<Vec<_>>().join(", "),
        );

        let _ = writeln!(md, "## Targets\n");
        let _ = writeln!(md, "| target | measured | |");
        let _ = writeln!(md, "|---|---|---|");
        let mut missed = Vec::new();
        let mut target = |md: &mut String, name: &str, measured: String, met: bool, why: &str| {
            let _ = writeln!(md, "| {name} | {measured} | {} |", if met { "met" } else { "**missed**" });
            if !met {
                missed.push(format!("- **{name}** ({measured}): {why}"));
            }
        };
        let wall_note = |workload: &str, config: &str, baseline: &str| {
            self.diff(Clock::Wall, workload, config, baseline)
                .map_or_else(String::new, |d| format!("; wall time {}", d.difference()))
        };
        let resolution = |d: &Option<Spread>| match d {
            Some(d) if d.resolved() => "",
            _ => " (**not resolved**: the spread is larger than the difference)",
        };
        let step = |config: &str, before: &str| {
            self.diff(Clock::Cpu, "cap_check", config, before).map_or_else(|| "?".into(), |d| d.difference())
        };
        let cap_why =
            cap_check_why([step("to_scope", "floor"), step("to_syscall", "to_scope"), step("to_key", "to_syscall")]);
        let cap = self.added("cap_check", "capwatch");
        let cap_bpftrace = self.added("cap_check", "bpftrace");
        let over = self.diff(Clock::Cpu, "cap_check", "capwatch", "floor");
        let over_median = over.map_or(f64::NAN, |d| d.median);
        target(
            &mut md,
            &format!("capability check: capwatch ≤ the floor + {CAP_OVER_FLOOR_NS} ns"),
            format!(
                "capwatch − floor {} ns{}{}",
                over.map_or_else(|| "?".into(), |d| d.difference()),
                resolution(&over),
                wall_note("cap_check", "capwatch", "floor")
            ),
            over_median <= CAP_OVER_FLOOR_NS,
            &cap_why,
        );
        let bpftrace_over = self.diff(Clock::Cpu, "cap_check", "bpftrace", "capwatch");
        let wall_ratio = {
            let (ours, theirs) = (
                self.diff(Clock::Wall, "cap_check", "capwatch", "bare"),
                self.diff(Clock::Wall, "cap_check", "bpftrace", "bare"),
            );
            match (ours, theirs) {
                (Some(o), Some(t)) => format!("; wall time {:.2}×", o.median / t.median),
                _ => String::new(),
            }
        };
        target(
            &mut md,
            &format!("capability check: capwatch ≤ {CAP_VS_BPFTRACE}× bpftrace's added cost"),
            format!(
                "{cap:+.1} ns vs {cap_bpftrace:+.1} ns: {:.2}×{}{wall_ratio}",
                cap / cap_bpftrace,
                resolution(&bpftrace_over)
            ),
            cap <= CAP_VS_BPFTRACE * cap_bpftrace,
            &format!(
                "the empty programs on capwatch's hooks alone add {:+.1} ns here, {:.2}× bpftrace's \
                 added cost, which leaves the check {:.1} ns over them for the target; {cap_why}",
                self.added("cap_check", "floor"),
                self.added("cap_check", "floor") / cap_bpftrace,
                CAP_VS_BPFTRACE * cap_bpftrace - self.added("cap_check", "floor"),
            ),
        );
        let sys = self.added("syscall", "capwatch");
        let sys_floor = self.added("syscall", "floor");
        let sys_over = self.diff(Clock::Cpu, "syscall", "capwatch", "floor");
        target(
            &mut md,
            &format!("syscall exit: capwatch ≤ {SYSCALL_VS_FLOOR}× the floor's added cost"),
            format!(
                "{sys:+.1} ns vs {sys_floor:+.1} ns: {:.2}×; capwatch − floor {} ns{}",
                sys / sys_floor,
                sys_over.map_or_else(|| "?".into(), |d| d.difference()),
                resolution(&sys_over)
            ),
            sys <= SYSCALL_VS_FLOOR * sys_floor,
            SYSCALL_WHY,
        );
        for workload in ["host_cap_check", "host_syscall"] {
            let d = self.diff(Clock::Cpu, workload, "capwatch", "floor");
            // The floor: not shown to cost more than it (the interval reaches zero or below).
            let met = d.is_some_and(|d| d.lo <= 0.0);
            target(
                &mut md,
                &format!("{workload}: capwatch costs the floor"),
                format!(
                    "capwatch − floor {} ns{}",
                    d.map_or_else(|| "?".into(), |d| d.difference()),
                    if met { ": not told from the floor" } else { "" }
                ),
                met,
                host_why(workload),
            );
        }
        let rates: Vec<&Value> = sustained["rates"].as_array().into_iter().flatten().collect();
        if let Some(fast) = rates.iter().find(|r| r["rate"] == 1_000_000) {
            let exact = fast["reported"] == fast["calls"] && fast["totals"] == fast["calls"] && sustained["lost"] == 0;
            let achieved = fast["achieved_rate"].as_f64().unwrap_or(0.0);
            let why = if exact {
                "the aggregates were exact with nothing lost, but this machine's workers could not \
                 make 1,000,000 checks per second (one worker per CPU, each denied sethostname with \
                 capwatch's programs on it): the rate was not reached, so the target is not shown. A faster or quieter \
                 machine would show it"
            } else {
                "the aggregates or the loss counters disagree with the checks made; see the loss lines \
                 in docs/performance.json"
            };
            target(
                &mut md,
                "aggregates exact at 1M checks/s, 0 lost",
                format!(
                    "{achieved:.0} checks/s; {} made, {} reported, {} in totals, {} lost",
                    fast["calls"], fast["reported"], fast["totals"], sustained["lost"]
                ),
                exact && achieved >= 950_000.0,
                why,
            );
        }
        target(
            &mut md,
            "daemon ≤ 30 MiB RSS, start-up included (peak, VmHWM)",
            format!("{:.1} MiB", peak_kib / 1024.0),
            peak_kib <= RSS_LIMIT_KIB,
            &format!(
                "after the sustained load the daemon held {:.1} MiB. The programs are loaded \
                 without a full parse of the kernel's BTF (capwatch/src/probe/sparse.rs: a sparse BTF \
                 for aya, read from the mapped one the offsets come from); what is left is the \
                 daemon's own: its store, the kallsyms table, the eBPF object's parse",
                sustained["rss_kib"].as_f64().unwrap_or(f64::NAN) / 1024.0
            ),
        );
        if let Some(slow) = rates.iter().find(|r| r["rate"] == 100_000) {
            let share = slow["daemon_cpu_share"].as_f64().unwrap_or(f64::NAN);
            target(
                &mut md,
                "daemon ≤ 1% of a core at 100,000 checks/s",
                format!("{:.2}%", share * 100.0),
                share <= CPU_LIMIT,
                "the daemon's once-a-second drain reads every key of the kernel's maps and writes the changed ones to the store",
            );
        }
        let worst = delays.iter().copied().fold(0.0, f64::max);
        target(
            &mut md,
            "check → report ≤ 1 s",
            format!("at most {worst:.0} ms"),
            !delays.is_empty() && worst <= DELAY_LIMIT_MS,
            "the store is written at each drain, once a second: a check made just after a drain waits for the next one, and the write itself adds to that. A drain on the first announcement of a key would close it",
        );
        if !missed.is_empty() {
            let _ = writeln!(md, "\n### Why the missed targets are missed\n");
            for line in &missed {
                let _ = writeln!(md, "{line}");
            }
        }
        let _ = writeln!(md, "\n## The bpftrace program\n\n```\n{}\n```", text("bpftrace_program"));
        md
    }

    /// Added ns per call by configuration, one group of bars per workload.
    fn chart(&self, path: &Path) -> Result<()> {
        let font = fs::read(FONT).with_context(|| format!("reading {FONT} (Debian's fonts-dejavu-core)"))?;
        plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into_boxed_slice()))
            .map_err(|_| anyhow::anyhow!("{FONT} is not a font plotters can use"))?;
        let shown = &CONFIGS[1..];
        // Added over bare, CPU time, by workload then by shown configuration.
        let rows: Vec<(&str, Vec<f64>)> =
            WORKLOADS.iter().map(|(w, _)| (*w, shown.iter().map(|c| self.added(w, c)).collect())).collect();
        let colors = [RGBColor(150, 150, 150), RGBColor(31, 119, 180), RGBColor(214, 39, 40)];
        let top = rows.iter().flat_map(|(_, added)| added.iter().copied()).fold(1.0, f64::max) * 1.15;
        let bottom = rows.iter().flat_map(|(_, added)| added.iter().copied()).fold(0.0, f64::min).min(0.0) * 1.15;
        let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let groups = rows.len() as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption("capwatch: added ns per call over bare (median)", ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..groups, bottom..top)?;
        let names: Vec<&str> = rows.iter().map(|(w, _)| *w).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(rows.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 1e-6 && i < names.len() {
                    names[i].to_string()
                } else {
                    String::new()
                }
            })
            .y_desc("added ns per call")
            .label_style(("sans-serif", 15))
            .draw()?;
        let width = 0.8 / shown.len() as f64;
        for (c, config) in shown.iter().enumerate() {
            let color = colors[c];
            let bars = rows.iter().enumerate().map(|(g, (_, added))| {
                let x0 = g as f64 + 0.1 + c as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.9, added[c])], color.filled())
            });
            chart
                .draw_series(bars)?
                .label(*config)
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], color.filled()));
            let labels = rows.iter().enumerate().map(|(g, (_, added))| {
                let x = g as f64 + 0.1 + c as f64 * width;
                let y = added[c].max(0.0);
                Text::new(format!("{:+.0}", added[c]), (x, y + top * 0.02), ("sans-serif", 14))
            });
            chart.draw_series(labels)?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE)
            .label_font(("sans-serif", 15))
            .draw()?;
        root.present().with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// Why capwatch's capability check costs more than an empty program, where it does; `steps` is
/// what the breakdown measured: the scope test, the syscall number, and the rest of the check.
fn cap_check_why(steps: [String; 3]) -> String {
    let [scope, syscall, rest] = steps;
    format!(
        "a watched check runs the steps of the breakdown above. The scope test: the current \
         task, read where the kernel has `bpf_rdonly_cast` (6.2+) from the per-CPU variable \
         behind `current` (a per-CPU array lookup the verifier inlines, then two loads), else \
         from the helper `bpf_get_current_task_btf`, a call into the kernel whose return goes \
         through the return thunk of the mitigations named at the top; then \
         `task->cgroups->dfl_cgrp->kn->id` by four loads: {scope} ns. The syscall number, read \
         from the task's stack where the kernel has `bpf_rdonly_cast`, else from the helper \
         `bpf_task_pt_regs`: {syscall} ns. The rest, the credential flags, the judgement of the \
         arguments, the origin (a per-CPU cache of the last process's) and the count (an atomic \
         add in the slot the daemon gave the key): {rest} ns"
    )
}

const SYSCALL_WHY: &str = "beyond the floor's empty program, every syscall exit reads the \
    tracepoint's two arguments and the syscall number, loads the count of pending denials (a \
    global), compares the result with -EPERM and -EACCES, and asks the syscall set's per-CPU \
    cache whether the thread's call is known: a few instructions and loads";

/// Why a host process's check or syscall costs more than an empty program, where it does.
fn host_why(workload: &str) -> &'static str {
    if workload == "host_cap_check" {
        "outside the watched subtree a check stops at the scope test: the current task (where \
         the kernel has `bpf_rdonly_cast`, a per-CPU array lookup the verifier inlines and two \
         loads; else the helper `bpf_get_current_task_btf`, a call into the kernel), four loads \
         for its cgroup id and a compare. The cgroup is the task's, so there is no way to tell a \
         host process from a container's without reading the task"
    } else {
        "outside the watched subtree a syscall exit does what a watched one does until the \
         syscall set's per-CPU cache says the thread is not watched: a few instructions and \
         loads, no helper call"
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}
