//! The corpus: real programs from Debian's packages, run for real in containers of an image the
//! tests build themselves (`cargo xtask test` debootstraps it: xtask/src/corpus.rs).
//!
//! For each program the test first finds, without capwatch, the capabilities without which it
//! breaks: it runs the program with every capability the host and Docker allow, then drops
//! capabilities and keeps those whose loss breaks it. A group of capabilities whose loss leaves
//! the program working holds none of those (fewer capabilities never help a program), so groups
//! go at once; a group whose loss breaks it is split, down to single capabilities, each then
//! dropped alone from the full set. Where the program works with either of two capabilities
//! (a fallback chain), no single loss breaks it: the search then sheds capabilities one group at
//! a time from the full set until nothing more can go, and for each capability left beyond the
//! required ones, tries every other in its place. The search runs twice, in opposite orders, and
//! both must agree.
//!
//! Then it runs the program under one capwatch daemon twice, with Docker's default capabilities
//! and with every capability, and requires `capwatch report --format docker` to advise exactly
//! that set each time. Every run is a real container under Docker's default seccomp profile,
//! which allows some syscalls only with some capabilities: that, too, is part of what breaking
//! means.
//!
//! In CI these must run. Elsewhere, without the engine and image `cargo xtask test` provides,
//! they say so and skip. `CAPWATCH_CORPUS_JOBS` bounds the containers run at once (default 4);
//! `CAPWATCH_CORPUS_RESULTS` names a file each program's result is appended to as a JSON line.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs,
    io::{Read, Write as _},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Condvar, Mutex, OnceLock,
    },
    thread,
    time::{Duration, Instant},
};

use capwatch_tests::{capwatch, container_name, docker_available, in_ci, json, tempdir, wait_stored, Launch, Running};

/// A set of capabilities, by number.
type Caps = BTreeSet<u8>;

/// How long one container may take before it counts as hung (and broken).
const RUN_DEADLINE: Duration = Duration::from_secs(90);
/// How long a service has to exit after SIGTERM (`docker stop`) before Docker kills it.
const STOP_GRACE_SECONDS: &str = "5";

// ---------------------------------------------------------------------------------------------
// The programs.

/// One program of the corpus.
struct Program {
    /// Where capwatch's advice is known to differ from the least privilege, and why
    /// (docs/advice-rules.md, "What capwatch cannot tell from one run"). The test fails if the
    /// advice differs in any other way, or no longer differs so.
    known: &'static [Known],
    /// `docker run` options it needs besides capabilities.
    options: &'static [&'static str],
    /// The container's command.
    command: &'static [&'static str],
    works: Works,
}

/// A known difference between the advice and the least privilege: the advice has the capability
/// wherever the container was granted it, though the program works without it. (Where capwatch
/// cannot tell, sufficient comes before minimal: the advice never knowingly lacks one.)
struct Known {
    capability: &'static str,
    why: &'static str,
}

/// How to tell that a program works.
enum Works {
    /// It runs to completion: exit status 0 and, where given, this text in its standard output.
    Exits { output: Option<&'static str> },
    /// A service: `check` (bash, through `docker exec`) waits for it to be ready, exercises it and
    /// exits 0 if it did its job; the service must then still be running, and exit by itself
    /// when `docker stop` sends SIGTERM.
    Serves { check: &'static str },
}

/// nginx binding :80 as root (no unprivileged ports below 1024, as on a host), workers as
/// www-data. Works: it answers a request.
const NGINX: Program = Program {
    known: &[],
    options: &["--sysctl", "net.ipv4.ip_unprivileged_port_start=1024"],
    command: &["nginx", "-g", "daemon off;"],
    works: Works::Serves {
        check: r#"for i in $(seq 100); do [ -s /run/nginx.pid ] && break; sleep 0.1; done
exec 3<>/dev/tcp/127.0.0.1/80 || exit 1
printf 'GET / HTTP/1.0\r\n\r\n' >&3
timeout 5 head -n 1 <&3 | grep -q ' 200 '"#,
    },
};

/// tcpdump capturing on the loopback interface (it drops to the tcpdump user and sheds its
/// capabilities with libcap-ng). Works: it captures a packet sent to it. Packets go out a moment
/// after it says it listens, as traffic comes to a capture that waits for it: a packet queued
/// before its first read spared it the wait (libpcap's poll on its socket), and a profile observed
/// so lacked `poll`, which the next run needed.
const TCPDUMP: Program = Program {
    known: &[],
    options: &[],
    command: &[
        "bash",
        "-c",
        r#"timeout 20 tcpdump -i lo -n -c 1 --immediate-mode udp port 9 2>/tmp/tcpdump.err & p=$!
for i in $(seq 300); do [ -d /proc/$p ] || break; grep -q '^listening on' /tmp/tcpdump.err && break; sleep 0.05; done
sleep 0.5
for i in $(seq 300); do [ -d /proc/$p ] || break; echo x > /dev/udp/127.0.0.1/9; sleep 0.05; done
wait $p"#,
    ],
    works: Works::Exits { output: Some("> 127.0.0.1.9: UDP") },
};

/// iputils ping keeps CAP_NET_ADMIN and CAP_NET_RAW through capset where it holds them
/// (`limit_capabilities`) and works without them: advised, since a program naming a fixed set
/// would not (docs/advice-rules.md, "Capabilities capset keeps").
const KEEPS_NET_RAW: Known =
    Known { capability: "NET_RAW", why: "ping keeps it through capset where it holds it, and works without it" };
const KEEPS_NET_ADMIN: Known =
    Known { capability: "NET_ADMIN", why: "ping keeps it through capset where it holds it, and works without it" };

/// Debian's ping, with its file capability `cap_net_raw=ep`, as the container's command (the
/// runtime's exec starts it) and run as root.
const PING_FILE_CAPS: Program = Program {
    known: &[KEEPS_NET_ADMIN],
    options: &[],
    command: &["ping", "-c", "1", "-W", "5", "127.0.0.1"],
    works: Works::Exits { output: Some("1 received") },
};

/// The same, started by a shell (the container's own exec starts it).
const PING_FILE_CAPS_FROM_A_SHELL: Program = Program {
    known: &[KEEPS_NET_ADMIN],
    options: &[],
    command: &["sh", "-c", "ping -c 1 -W 5 127.0.0.1"],
    works: Works::Exits { output: Some("1 received") },
};

/// The same, run as an unprivileged user: the file capability is what lets it use a raw socket.
const PING_FILE_CAPS_USER: Program = Program {
    known: &[],
    options: &["--user", "nobody"],
    command: &["ping", "-c", "1", "-W", "5", "127.0.0.1"],
    works: Works::Exits { output: Some("1 received") },
};

/// The same program without file capabilities, run as root (an ICMP socket: Docker allows them
/// to every group in a container's network namespace).
const PING_PLAIN: Program = Program {
    known: &[KEEPS_NET_RAW, KEEPS_NET_ADMIN],
    options: &[],
    command: &["ping-plain", "-c", "1", "-W", "5", "127.0.0.1"],
    works: Works::Exits { output: Some("1 received") },
};

/// The identity `id` prints once root became nobody, supplementary groups included.
const NOBODY: &str = "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)";

/// su (PAM: pam_rootok, audit records) from root to nobody.
const SU: Program = Program {
    known: &[],
    options: &[],
    command: &["su", "nobody", "-s", "/bin/sh", "-c", "id"],
    works: Works::Exits { output: Some(NOBODY) },
};

/// runuser (PAM, without authentication) from root to nobody.
const RUNUSER: Program = Program {
    known: &[],
    options: &[],
    command: &["runuser", "-u", "nobody", "--", "id"],
    works: Works::Exits { output: Some(NOBODY) },
};

/// setpriv (no PAM) from root to nobody.
const SETPRIV: Program = Program {
    known: &[],
    options: &[],
    command: &["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "id"],
    works: Works::Exits { output: Some(NOBODY) },
};

/// A tree handed to www-data and closed to others, by root: chown -R, then chmod -R, which must
/// descend into directories root no longer may read.
const CHOWN_CHMOD_TREE: Program = Program {
    known: &[],
    options: &[],
    command: &[
        "sh",
        "-c",
        "cp -a /etc/nginx /srv/tree && chown -R www-data:www-data /srv/tree && chmod -R u=rwX,g=rX,o= /srv/tree \
         && stat -c '%U:%G %a %n' /srv/tree /srv/tree/nginx.conf",
    ],
    works: Works::Exits { output: Some("www-data:www-data 640 /srv/tree/nginx.conf") },
};

/// rsyslog with Debian's configuration: imklog reads the kernel log from /proc/kmsg, imuxsock
/// takes local messages, files are written as root:adm. Works: it holds the kernel log open, a
/// local message reaches /var/log/syslog, and the file has the group the configuration asks for.
const RSYSLOG: Program = Program {
    known: &[],
    options: &[],
    command: &["rsyslogd", "-n", "-iNONE"],
    works: Works::Serves {
        check: r#"for i in $(seq 100); do [ -S /dev/log ] && break; sleep 0.1; done
logger -t corpus-check hello
for i in $(seq 50); do grep -q corpus-check /var/log/syslog 2>/dev/null && break; sleep 0.1; done
grep -q corpus-check /var/log/syslog && ls -l /proc/1/fd | grep -q ' -> /proc/kmsg$' && [ "$(stat -c %G /var/log/syslog)" = adm ]"#,
    },
};

/// dmesg reading the kernel's ring buffer (syslog(2): a container has no /dev/kmsg).
const DMESG: Program = Program { known: &[], options: &[], command: &["dmesg"], works: Works::Exits { output: None } };

/// hwclock setting the kernel's timezone (settimeofday), without touching the hardware clock.
const HWCLOCK: Program = Program {
    known: &[],
    options: &[],
    command: &["hwclock", "--systz", "--utc"],
    works: Works::Exits { output: None },
};

/// nice raising a command's priority (a negative niceness); nice itself only warns when it
/// cannot, so the command reports the niceness it got.
const NICE: Program = Program {
    known: &[],
    options: &[],
    command: &["nice", "-n", "-10", "nice"],
    works: Works::Exits { output: Some("-10") },
};

/// mount of a tmpfs.
const MOUNT: Program = Program {
    known: &[],
    options: &[],
    command: &["sh", "-c", "mount -t tmpfs -o size=1m corpus /mnt && grep ' /mnt tmpfs ' /proc/mounts"],
    works: Works::Exits { output: Some("corpus /mnt tmpfs") },
};

/// ip adding an address to the container's loopback interface.
const IP_ADDR: Program = Program {
    known: &[],
    options: &[],
    command: &["sh", "-c", "ip addr add 192.0.2.1/32 dev lo && ip -4 addr show dev lo"],
    works: Works::Exits { output: Some("inet 192.0.2.1/32") },
};

/// sshd: its connection handler chroots to /run/sshd and becomes the sshd user before the key
/// exchange. Works: a key scan gets the host key.
const SSHD: Program = Program {
    known: &[Known {
        capability: "KILL",
        why: "its monitor SIGKILLs its exiting pre-authentication child; refused, it logs and goes on",
    }],
    options: &[],
    command: &["/usr/sbin/sshd", "-D", "-e"],
    works: Works::Serves {
        check: r#"for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/22) 2>/dev/null && break; sleep 0.1; done
ssh-keyscan -T 5 -t ed25519 127.0.0.1 2>/dev/null | grep -q ssh-ed25519"#,
    },
};

/// chronyd without control of the clock: it becomes _chrony and keeps only the capabilities it
/// still uses. Works: it answers chronyc.
const CHRONYD: Program = Program {
    known: &[],
    options: &[],
    command: &["chronyd", "-x", "-d"],
    works: Works::Serves {
        check: r#"for i in $(seq 100); do [ -S /run/chrony/chronyd.sock ] && break; sleep 0.1; done
chronyc -n tracking | grep -q 'Reference ID'"#,
    },
};

macro_rules! corpus {
    ($($test:ident => $program:expr,)*) => {
        $(
            #[test]
            fn $test() {
                check(stringify!($test), &$program);
            }
        )*
    };
}

corpus! {
    web_server_binding_port_80_and_switching_user => NGINX,
    packet_capture => TCPDUMP,
    ping_with_file_capabilities => PING_FILE_CAPS,
    ping_with_file_capabilities_from_a_shell => PING_FILE_CAPS_FROM_A_SHELL,
    ping_with_file_capabilities_as_a_user => PING_FILE_CAPS_USER,
    ping_without_file_capabilities => PING_PLAIN,
    su_to_another_user => SU,
    runuser_to_another_user => RUNUSER,
    setpriv_to_another_user => SETPRIV,
    chown_and_chmod_of_a_tree => CHOWN_CHMOD_TREE,
    syslog_daemon_reading_the_kernel_log => RSYSLOG,
    dmesg_reading_the_kernel_log => DMESG,
    hwclock_setting_the_kernel_timezone => HWCLOCK,
    nice_raising_a_priority => NICE,
    mount_of_a_tmpfs => MOUNT,
    ip_adding_an_address => IP_ADDR,
    privilege_separating_ssh_daemon => SSHD,
    time_daemon_dropping_its_own_capabilities => CHRONYD,
}

// ---------------------------------------------------------------------------------------------
// The test of one program.

fn check(test: &str, program: &Program) {
    let Some(corpus) = Corpus::get(test) else { return };
    let started = Instant::now();
    let ascending: Vec<u8> = corpus.full.iter().copied().collect();
    let descending: Vec<u8> = ascending.iter().rev().copied().collect();
    let (first, second, defaults, every) = thread::scope(|s| {
        let first = s.spawn(|| Search::new(corpus, program, test).truth(&ascending));
        let second = s.spawn(|| Search::new(corpus, program, test).truth(&descending));
        let defaults = s.spawn(|| observe(corpus, program, test, &Grant::Defaults));
        let every = s.spawn(|| observe(corpus, program, test, &Grant::Every));
        (join(first), join(second), join(defaults), join(every))
    });
    // Its profile from the run where it worked (under Docker's defaults some of these fail).
    let confined_run = confined(corpus, program, test, &every.name, &every.advice);
    let seconds = started.elapsed().as_secs_f64();

    let mut summary = format!("{test}: least privilege {}", first.describe());
    for observed in [&defaults, &every] {
        let _ = write!(summary, "; observed with {}: advised {}", observed.grant, show(&observed.advice));
    }
    let _ = write!(summary, " ({} + {} runs, {seconds:.0} s)", first.runs, second.runs);
    eprintln!("{summary}");
    record(test, &first, &second, &[&defaults, &every], seconds);

    assert!(
        first.required == second.required && first.alternatives == second.alternatives,
        "{test}: the search for the least privilege is not stable: {} in one order, {} in the other\n{}\n{}",
        first.describe(),
        second.describe(),
        first.evidence_text(),
        second.evidence_text()
    );
    let failures: Vec<String> = [&defaults, &every]
        .into_iter()
        .filter(|observed| !first.admits(&known_differences_undone(program, &observed.advice)))
        .map(|observed| observed.diagnosis(&first))
        .collect();
    for known in program.known {
        let cap = cap_index(known.capability).expect("a capability's name");
        for observed in [&defaults, &every] {
            let still = observed.advice.contains(&cap) || !observed.grant.holds(cap);
            assert!(
                still,
                "{test}: the known difference in {} ({}) is gone: update the corpus and docs/advice-rules.md",
                known.capability, known.why
            );
        }
    }
    assert!(
        confined_run.works,
        "{test}: it does not work with its advice and capwatch's seccomp profile: {}",
        confined_run.detail
    );
    assert!(
        failures.is_empty(),
        "{test}: capwatch's advice is not the least privilege\n{}\n{}",
        first.evidence_text(),
        failures.join("\n")
    );
}

/// A group of capabilities split in up to four parts, tried at once: fewer rounds of containers
/// than halving, for the same number of them.
fn parts(group: &[u8]) -> std::slice::Chunks<'_, u8> {
    group.chunks(group.len().div_ceil(4).max(1))
}

/// A scoped thread's result; its panic, if it panicked.
fn join<T>(handle: thread::ScopedJoinHandle<'_, T>) -> T {
    handle.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Appends the program's result to `CAPWATCH_CORPUS_RESULTS`, if set.
fn record(test: &str, first: &Truth, second: &Truth, observed: &[&Observed], seconds: f64) {
    let Some(path) = std::env::var_os("CAPWATCH_CORPUS_RESULTS") else { return };
    let names = |caps: &Caps| caps.iter().map(|&c| cap_name(c)).collect::<Vec<_>>();
    let line = serde_json::json!({
        "program": test,
        "required": names(&first.required),
        "alternatives": first.alternatives.iter().map(names).collect::<Vec<_>>(),
        "stable": first.required == second.required && first.alternatives == second.alternatives,
        "evidence": first.evidence.iter().map(|(c, why)| (cap_name(*c), why.clone())).collect::<BTreeMap<_, _>>(),
        "observed": observed.iter().map(|o| serde_json::json!({
            "grant": o.grant.to_string(),
            "worked": o.trial.works,
            "advice": names(&o.advice),
            "admitted": first.admits(&o.advice),
        })).collect::<Vec<_>>(),
        "runs": first.runs + second.runs,
        "seconds": seconds,
    });
    let mut file = fs::OpenOptions::new().create(true).append(true).open(&path).expect("CAPWATCH_CORPUS_RESULTS");
    writeln!(file, "{line}").expect("write results");
}

// ---------------------------------------------------------------------------------------------
// The least privilege, found by running the program.

/// What the search found.
struct Truth {
    /// Capabilities whose loss alone breaks the program.
    required: Caps,
    /// Where any one of several capabilities is enough (and one is needed): each set of such
    /// interchangeable capabilities.
    alternatives: BTreeSet<Caps>,
    /// How the program broke without each required capability.
    evidence: BTreeMap<u8, String>,
    runs: usize,
}

impl Truth {
    /// Whether `advice` is a least privilege: the required capabilities and exactly one of each
    /// set of alternatives.
    fn admits(&self, advice: &Caps) -> bool {
        let rest: Caps = advice.difference(&self.required).copied().collect();
        self.required.is_subset(advice)
            && rest.len() == self.alternatives.len()
            && self.alternatives.iter().all(|set| set.intersection(&rest).count() == 1)
            && rest.iter().all(|c| self.alternatives.iter().any(|set| set.contains(c)))
    }

    fn describe(&self) -> String {
        let mut text = show(&self.required);
        for set in &self.alternatives {
            let names: Vec<String> = set.iter().map(|&c| cap_name(c)).collect();
            let _ = write!(text, " + one of ({})", names.join(" | "));
        }
        text
    }

    fn evidence_text(&self) -> String {
        let mut text = String::from("without each required capability:");
        for (cap, why) in &self.evidence {
            let _ = write!(text, "\n  {}: {why}", cap_name(*cap));
        }
        if self.evidence.is_empty() {
            text.push_str(" (none required)");
        }
        text
    }
}

/// One search for one program.
struct Search<'a> {
    corpus: &'a Corpus,
    program: &'a Program,
    label: &'a str,
    runs: AtomicUsize,
    evidence: Mutex<BTreeMap<u8, String>>,
}

impl<'a> Search<'a> {
    fn new(corpus: &'a Corpus, program: &'a Program, label: &'a str) -> Self {
        Self { corpus, program, label, runs: AtomicUsize::new(0), evidence: Mutex::new(BTreeMap::new()) }
    }

    fn works(&self, caps: &Caps) -> Trial {
        self.runs.fetch_add(1, Ordering::Relaxed);
        self.corpus.trial(
            self.program,
            &Grant::Exactly(caps.clone()),
            &container_name(self.label),
            self.corpus.search_parent.as_deref(),
        )
    }

    fn truth(&self, order: &[u8]) -> Truth {
        let full: Caps = order.iter().copied().collect();
        // The full set must work for anything below to mean something; both start at once.
        let (all, required) = thread::scope(|s| {
            let all = s.spawn(|| self.works(&full));
            let required = self.required(&full, order);
            (join(all), required)
        });
        assert!(
            all.works,
            "{}: the program does not work even with every capability ({}): {}",
            self.label,
            show(&full),
            all.detail
        );
        let mut alternatives = BTreeSet::new();
        if !self.works(&required).works {
            // No single loss breaks it, yet the required ones are not enough: some need is met
            // by any of several capabilities.
            let mut kept = full.clone();
            let candidates: Vec<u8> = order.iter().copied().filter(|c| !required.contains(c)).collect();
            self.shed(&mut kept, &candidates);
            let spare: Vec<u8> = full.difference(&kept).copied().collect();
            let extra: Vec<u8> = kept.difference(&required).copied().collect();
            alternatives = thread::scope(|s| {
                let handles: Vec<_> = extra
                    .iter()
                    .map(|&cap| {
                        let (kept, spare) = (&kept, &spare);
                        s.spawn(move || {
                            let mut without = kept.clone();
                            without.remove(&cap);
                            let mut set = self.substitutes(&without, spare);
                            set.insert(cap);
                            set
                        })
                    })
                    .collect();
                handles.into_iter().map(join).collect()
            });
        }
        Truth {
            required,
            alternatives,
            evidence: std::mem::take(&mut *self.evidence.lock().unwrap()),
            runs: self.runs.load(Ordering::Relaxed),
        }
    }

    /// The capabilities of `group` whose loss alone breaks the program.
    fn required(&self, full: &Caps, group: &[u8]) -> Caps {
        let without: Caps = full.iter().copied().filter(|c| !group.contains(c)).collect();
        let trial = self.works(&without);
        if trial.works {
            return Caps::new();
        }
        if let [cap] = group {
            self.evidence.lock().unwrap().insert(*cap, trial.detail);
            return Caps::from([*cap]);
        }
        thread::scope(|s| {
            let parts: Vec<_> = parts(group).map(|part| s.spawn(move || self.required(full, part))).collect();
            parts.into_iter().flat_map(join).collect()
        })
    }

    /// The capabilities of `group` each of which, added to `base`, makes the program work: a
    /// group none of which can is ruled out at once, one that can is split.
    fn substitutes(&self, base: &Caps, group: &[u8]) -> Caps {
        if group.is_empty() {
            return Caps::new();
        }
        let with: Caps = base.iter().chain(group).copied().collect();
        if !self.works(&with).works {
            return Caps::new();
        }
        if let [cap] = group {
            return Caps::from([*cap]);
        }
        thread::scope(|s| {
            let parts: Vec<_> = parts(group).map(|part| s.spawn(move || self.substitutes(base, part))).collect();
            parts.into_iter().flat_map(join).collect()
        })
    }

    /// Removes from `kept` what of `group` it can lose and still work, a group at a time.
    fn shed(&self, kept: &mut Caps, group: &[u8]) {
        if group.is_empty() {
            return;
        }
        let without: Caps = kept.iter().copied().filter(|c| !group.contains(c)).collect();
        if self.works(&without).works {
            *kept = without;
        } else if group.len() > 1 {
            let (left, right) = group.split_at(group.len() / 2);
            self.shed(kept, left);
            self.shed(kept, right);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// capwatch's advice.

/// One run of the program under the daemon, and what capwatch made of it.
struct Observed {
    /// The container's name (removed; the store keeps what it did).
    name: String,
    grant: Grant,
    trial: Trial,
    advice: Caps,
    flags: String,
    table: String,
    explain: String,
}

impl Observed {
    fn diagnosis(&self, truth: &Truth) -> String {
        let extra: Caps = self
            .advice
            .iter()
            .copied()
            .filter(|c| !truth.required.contains(c) && !truth.alternatives.iter().any(|s| s.contains(c)))
            .collect();
        let missing: Caps = truth.required.difference(&self.advice).copied().collect();
        format!(
            "observed with {}: advised {} ({}), least privilege {}; more than needed: {}; missing: {}\n\
             the program {} under observation: {}\n--- capwatch report ---\n{}\n--- capwatch explain ---\n{}",
            self.grant,
            show(&self.advice),
            self.flags.trim(),
            truth.describe(),
            show(&extra),
            show(&missing),
            if self.trial.works { "worked" } else { "did not work" },
            self.trial.detail,
            self.table.trim_end(),
            self.explain.trim_end(),
        )
    }
}

/// The advice as it would be without the program's known differences.
fn known_differences_undone(program: &Program, advice: &Caps) -> Caps {
    let mut advice = advice.clone();
    for known in program.known {
        let cap = cap_index(known.capability).expect("a capability's name");
        advice.remove(&cap);
    }
    advice
}

fn observe(corpus: &Corpus, program: &Program, label: &str, grant: &Grant) -> Observed {
    let name = container_name(label);
    let _removal = Removal(corpus, &name);
    let trial = corpus.trial_kept(program, grant, &name, None);
    let state = corpus.state.to_str().expect("utf-8 path");
    wait_stored(&corpus.state, &name);
    let (code, flags, stderr) = capwatch(&["report", &name, "--format", "docker", "--state-dir", state]);
    assert_eq!(code, Some(0), "capwatch report {name} --format docker: {stderr}");
    let (_, table, _) = capwatch(&["report", &name, "--state-dir", state]);
    let (_, explain, _) = capwatch(&["explain", &name, "--state-dir", state]);
    let words: Vec<&str> = flags.split_whitespace().collect();
    assert!(words.len() >= 2 && words[..2] == ["--cap-drop", "ALL"], "capwatch report {name} --format docker: {flags}");
    let advice = words[2..]
        .chunks(2)
        .map(|pair| {
            assert_eq!(pair[0], "--cap-add", "capwatch report {name} --format docker: {flags}");
            cap_index(pair[1]).unwrap_or_else(|| panic!("capwatch advised an unknown capability {:?}", pair[1]))
        })
        .collect();
    Observed { name: name.clone(), grant: grant.clone(), trial, advice, flags, table, explain }
}

/// The program, run again with its advice and the seccomp profile capwatch wrote from its run
/// `name`: it must work as it did.
fn confined(corpus: &Corpus, program: &Program, label: &str, name: &str, advice: &Caps) -> Trial {
    let state = corpus.state.to_str().expect("utf-8 path");
    let (code, profile, stderr) = capwatch(&["report", name, "--format", "seccomp", "--state-dir", state]);
    assert_eq!(code, Some(0), "capwatch report {name} --format seccomp: {stderr}");
    let file = corpus.state.join(format!("{name}.seccomp.json"));
    fs::write(&file, profile).expect("write the profile");
    corpus.trial(program, &Grant::Confined(advice.clone(), file), &container_name(label), None)
}

// ---------------------------------------------------------------------------------------------
// Containers.

/// The capabilities a container is given.
#[derive(Clone)]
enum Grant {
    /// `--cap-drop ALL` and these.
    Exactly(Caps),
    /// No capability option: Docker's default set.
    Defaults,
    /// `--cap-add ALL`, less what the host's bounding set lacks.
    Every,
    /// `--cap-drop ALL`, these, and the seccomp profile in this file.
    Confined(Caps, PathBuf),
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Grant::Exactly(caps) => write!(f, "exactly {}", show(caps)),
            Grant::Defaults => f.write_str("Docker's default capabilities"),
            Grant::Every => f.write_str("every capability"),
            Grant::Confined(caps, _) => write!(f, "exactly {} and capwatch's seccomp profile", show(caps)),
        }
    }
}

impl Grant {
    /// Whether a container given these holds capability `cap` (`Every` holds all there are).
    fn holds(&self, cap: u8) -> bool {
        match self {
            Grant::Exactly(caps) | Grant::Confined(caps, _) => caps.contains(&cap),
            Grant::Defaults => capwatch::advice::DOCKER_DEFAULT_CAPS & 1 << cap != 0,
            Grant::Every => true,
        }
    }
}

/// Removes a container when dropped, however the test ends.
struct Removal<'a>(&'a Corpus, &'a str);

impl Drop for Removal<'_> {
    fn drop(&mut self) {
        self.0.remove(self.1);
    }
}

/// One run of a program.
struct Trial {
    works: bool,
    /// Why it did not work, or what it printed last.
    detail: String,
}

/// The engine, the image, the full set of capabilities and the daemon every test shares.
struct Corpus {
    socket: String,
    image: String,
    /// Every capability a container can get here: the host's bounding set, as far as Docker
    /// knows the capabilities.
    full: Caps,
    /// The options that grant `full`.
    every: Vec<String>,
    /// The shared daemon's store.
    state: PathBuf,
    /// Where the search's containers go: a cgroup the daemon does not watch, so that the
    /// hundreds of them cost it nothing.
    search_parent: Option<String>,
    jobs: Jobs,
}

impl Corpus {
    /// The corpus's environment, set up by the first test that asks; None (the test skips) where
    /// there is no engine or image, which in CI fails instead.
    fn get(test: &str) -> Option<&'static Corpus> {
        let env = docker_available(test)?;
        let image = match std::env::var("CAPWATCH_CORPUS_IMAGE") {
            Ok(image) if !image.is_empty() => image,
            _ if in_ci() => panic!("{test}: cannot run in CI: no corpus image (run the tests with `cargo xtask test`)"),
            _ => {
                eprintln!("SKIPPED {test}: no corpus image (`cargo xtask test` builds one)");
                return None;
            }
        };
        static CORPUS: OnceLock<Corpus> = OnceLock::new();
        Some(CORPUS.get_or_init(|| Corpus::set_up(env.socket, image)))
    }

    fn set_up(socket: String, image: String) -> Corpus {
        remove_stale_stores();
        let jobs = std::env::var("CAPWATCH_CORPUS_JOBS").ok().and_then(|j| j.parse().ok()).unwrap_or(4usize).max(1);
        let mut corpus = Corpus {
            socket,
            image,
            full: Caps::new(),
            every: Vec::new(),
            state: tempdir("corpus-daemon"),
            search_parent: None,
            jobs: Jobs::new(jobs),
        };
        let (every, full, cgroup_parent) = corpus.every_capability();
        corpus.every = every;
        corpus.full = full;
        // The daemon watches the engine's containers; the search's go beside them.
        corpus.search_parent = cgroup_parent.as_ref().map(|_| "/capwatch-corpus-search".to_string());
        start_daemon(&corpus, cgroup_parent.as_deref());
        corpus
    }

    /// `--cap-add ALL` with the capabilities the host's bounding set lacks dropped (runc cannot
    /// grant them), and the set a container so started holds; and the cgroup its containers are
    /// made in, when the container can see it.
    fn every_capability(&self) -> (Vec<String>, Caps, Option<String>) {
        let bounding =
            proc_mask("CapBnd", &fs::read_to_string("/proc/self/status").expect("/proc/self/status")).expect("CapBnd");
        let mut lacking: Vec<String> =
            caps::all().into_iter().filter(|c| bounding & (1 << c.index()) == 0).map(|c| cap_name(c.index())).collect();
        lacking.sort();
        loop {
            let mut options = vec!["--cap-add".to_string(), "ALL".to_string()];
            for cap in &lacking {
                options.extend(["--cap-drop".to_string(), cap.clone()]);
            }
            let mut args = vec!["run", "--rm", "--network", "none"];
            args.extend(options.iter().map(String::as_str));
            args.extend([self.image.as_str(), "sh", "-c", "grep CapEff /proc/self/status; cat /proc/self/cgroup"]);
            let out = self.docker().args(&args).output().expect("docker run");
            let stderr = String::from_utf8_lossy(&out.stderr);
            // A capability this Docker does not know cannot be granted either: no need to drop it.
            if let Some(unknown) =
                lacking.iter().position(|c| stderr.contains(&format!("unknown capability: \"CAP_{c}\"")))
            {
                lacking.remove(unknown);
                continue;
            }
            assert!(out.status.success(), "docker run {args:?}: {stderr}");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let effective = proc_mask("CapEff", &stdout).unwrap_or_else(|| panic!("no CapEff in {stdout}"));
            let full: Caps = (0..64u8).filter(|i| effective & (1 << i) != 0).collect();
            // `0::/docker/<id>` in the unified hierarchy: its parent holds every container.
            let parent = stdout
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .and_then(|path| path.rsplit_once('/'))
                .map(|(parent, _)| parent.to_string())
                .filter(|parent| !parent.is_empty());
            return (options, full, parent);
        }
    }

    fn docker(&self) -> Command {
        let mut docker = Command::new("docker");
        docker.arg("--host").arg(format!("unix://{}", self.socket));
        docker
    }

    fn grant_options(&self, grant: &Grant) -> Vec<String> {
        match grant {
            Grant::Exactly(caps) => {
                let mut options = vec!["--cap-drop".to_string(), "ALL".to_string()];
                for &cap in caps {
                    options.extend(["--cap-add".to_string(), cap_name(cap)]);
                }
                options
            }
            Grant::Defaults => Vec::new(),
            Grant::Every => self.every.clone(),
            Grant::Confined(caps, profile) => {
                let mut options = self.grant_options(&Grant::Exactly(caps.clone()));
                options.extend(["--security-opt".to_string(), format!("seccomp={}", profile.display())]);
                options
            }
        }
    }

    /// Runs the program once in a container that is removed afterwards.
    fn trial(&self, program: &Program, grant: &Grant, name: &str, cgroup_parent: Option<&str>) -> Trial {
        let _removal = Removal(self, name);
        self.trial_kept(program, grant, name, cgroup_parent)
    }

    /// Runs the program once in a container named `name`, left for the caller to remove (the
    /// daemon names containers from the engine's records).
    fn trial_kept(&self, program: &Program, grant: &Grant, name: &str, cgroup_parent: Option<&str>) -> Trial {
        let _job = self.jobs.take();
        let mut args: Vec<String> = ["run", "--name", name, "--network", "none"].map(String::from).to_vec();
        if let Some(parent) = cgroup_parent {
            args.extend(["--cgroup-parent".to_string(), parent.to_string()]);
        }
        if matches!(program.works, Works::Serves { .. }) {
            args.push("--detach".into());
        }
        args.extend(program.options.iter().map(ToString::to_string));
        args.extend(self.grant_options(grant));
        args.push(self.image.clone());
        args.extend(program.command.iter().map(ToString::to_string));
        let run = self.bounded(&args, name);
        match &program.works {
            Works::Exits { output } => {
                let printed = format!("{}{}", run.stdout, run.stderr);
                let works = run.status == Some(0) && output.is_none_or(|o| run.stdout.contains(o));
                let detail = if run.timed_out {
                    format!("still running after {} s", RUN_DEADLINE.as_secs())
                } else {
                    format!("exit status {:?}: {}", run.status, tail(&printed))
                };
                Trial { works, detail }
            }
            Works::Serves { check } => {
                if run.status != Some(0) {
                    return Trial { works: false, detail: format!("docker run failed: {}", tail(&run.stderr)) };
                }
                let checked = self.bounded(&["exec", name, "bash", "-c", check].map(String::from), name);
                let running = self.inspect(name, "{{.State.Running}}") == "true";
                // Stopped in every case: an observed container's exit ends its observation.
                self.bounded(&["stop", "--time", STOP_GRACE_SECONDS, name].map(String::from), name);
                let (works, why) = if checked.status != Some(0) {
                    (false, "its check failed")
                } else if !running {
                    (false, "it exited after its check passed")
                } else if self.inspect(name, "{{.State.ExitCode}}") == "137" {
                    (false, "it did not stop on SIGTERM")
                } else {
                    (true, "it worked and stopped on SIGTERM")
                };
                if works {
                    return Trial { works, detail: why.to_string() };
                }
                let logs =
                    self.docker().args(["logs", "--tail", "20", name]).output().map(|o| {
                        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
                    });
                Trial { works, detail: format!("{why}; its log: {}", tail(&logs.unwrap_or_default())) }
            }
        }
    }

    fn inspect(&self, name: &str, format: &str) -> String {
        let out = self.docker().args(["inspect", "--format", format, name]).output().expect("docker inspect");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn remove(&self, name: &str) {
        let _ = self.docker().args(["rm", "--force", name]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }

    /// `docker ARGS`, killing the container `name` if it takes longer than RUN_DEADLINE.
    fn bounded(&self, args: &[String], name: &str) -> Ran {
        let mut child = self
            .docker()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("docker {args:?}: {e}"));
        let read = |mut pipe: Box<dyn Read + Send>| {
            thread::spawn(move || {
                let mut text = Vec::new();
                let _ = pipe.read_to_end(&mut text);
                String::from_utf8_lossy(&text).into_owned()
            })
        };
        let stdout = read(Box::new(child.stdout.take().expect("stdout")));
        let stderr = read(Box::new(child.stderr.take().expect("stderr")));
        let deadline = Instant::now() + RUN_DEADLINE;
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for docker") {
                break status;
            }
            if Instant::now() > deadline && !timed_out {
                timed_out = true;
                self.remove(name);
                let _ = child.kill();
            }
            thread::sleep(Duration::from_millis(20));
        };
        Ran {
            status: if timed_out { None } else { status.code() },
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
            timed_out,
        }
    }
}

struct Ran {
    status: Option<i32>,
    stdout: String,
    stderr: String,
    timed_out: bool,
}

/// The last lines of what a program printed, on one line.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(4)..].join(" | ")
}

/// At most so many containers at once.
struct Jobs {
    free: Mutex<usize>,
    freed: Condvar,
}

struct Job<'a>(&'a Jobs);

impl Jobs {
    fn new(n: usize) -> Self {
        Self { free: Mutex::new(n), freed: Condvar::new() }
    }

    fn take(&self) -> Job<'_> {
        let mut free = self.free.lock().unwrap();
        while *free == 0 {
            free = self.freed.wait(free).unwrap();
        }
        *free -= 1;
        Job(self)
    }
}

impl Drop for Job<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap() += 1;
        self.0.freed.notify_one();
    }
}

/// The stores of earlier runs' daemons (each hundreds of containers), once their run is over.
fn remove_stale_stores() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.strip_prefix("capwatch-test-").and_then(|rest| rest.strip_suffix("-corpus-daemon"));
        if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) {
            if pid != std::process::id() && !PathBuf::from(format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// One daemon for every test: it watches the engine's containers for as long as the test
/// executable runs, from a thread that lives as long, and gets SIGTERM when the executable ends.
fn start_daemon(corpus: &Corpus, cgroup_parent: Option<&str>) {
    let mut args = vec![
        "daemon".to_string(),
        "--state-dir".to_string(),
        corpus.state.to_str().expect("utf-8 path").to_string(),
        "--docker-socket".to_string(),
        corpus.socket.clone(),
    ];
    if let Some(parent) = cgroup_parent {
        args.extend(["--cgroup-root".to_string(), parent.to_string()]);
    }
    let (started, ready) = mpsc::channel();
    thread::Builder::new()
        .name("capwatch-daemon".into())
        .spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut daemon = Running::start_as(&Launch::default().dying_with_parent(), &args, &[]);
            daemon.wait_for("event=docker_connected", |l| json(l)["event"] == "docker_connected");
            started.send(()).expect("the test waits for the daemon");
            // Keeps the daemon (and this thread, its parent) until the executable ends.
            loop {
                thread::park();
            }
        })
        .expect("daemon thread");
    ready.recv_timeout(Duration::from_secs(60)).expect("capwatch daemon did not connect to Docker within 60 s");
}

// ---------------------------------------------------------------------------------------------
// Capability names.

/// `NET_RAW` for 13, as `docker run --cap-add` and capwatch's docker format spell it.
fn cap_name(index: u8) -> String {
    caps::all()
        .into_iter()
        .find(|c| c.index() == index)
        .map(|c| c.to_string().trim_start_matches("CAP_").to_string())
        .unwrap_or_else(|| format!("CAP_{index}"))
}

fn cap_index(name: &str) -> Option<u8> {
    let name = name.trim_start_matches("CAP_").to_ascii_uppercase();
    caps::all().into_iter().find(|c| c.to_string().trim_start_matches("CAP_") == name).map(|c| c.index())
}

fn show(caps: &Caps) -> String {
    if caps.is_empty() {
        return "nothing".to_string();
    }
    caps.iter().map(|&c| cap_name(c)).collect::<Vec<_>>().join(" ")
}

/// A capability mask from /proc's status format (`CapBnd:\t000001fffeffffff`).
fn proc_mask(field: &str, status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// The corpus's own checks, which need no engine.
#[test]
fn admits_exactly_the_required_and_one_of_each_alternative() {
    let truth = Truth {
        required: Caps::from([0, 3]),
        alternatives: BTreeSet::from([Caps::from([1, 2])]),
        evidence: BTreeMap::new(),
        runs: 0,
    };
    assert!(truth.admits(&Caps::from([0, 1, 3])));
    assert!(truth.admits(&Caps::from([0, 2, 3])));
    assert!(!truth.admits(&Caps::from([0, 3])));
    assert!(!truth.admits(&Caps::from([0, 1, 2, 3])));
    assert!(!truth.admits(&Caps::from([0, 1])));
    assert!(!truth.admits(&Caps::from([0, 1, 3, 4])));
    assert_eq!(truth.describe(), "CHOWN FOWNER + one of (DAC_OVERRIDE | DAC_READ_SEARCH)");
    assert_eq!(cap_index("CAP_NET_RAW"), Some(13));
    assert_eq!(cap_index("net_raw"), Some(13));
    assert_eq!(proc_mask("CapBnd", "CapInh:\t0\nCapBnd:\t000001fffeffffff\n"), Some(0x1fffeffffff));
}
