//! `capwatch run -- CMD`: one command in a fresh cgroup of its own, under capwatch's probes and
//! without a daemon. What it did flows as the daemon's does (attribution, then a store, here one
//! of its own in a temporary directory), so its report is judged by the same rules; the command
//! is the cgroup's "container", started as a runtime starts one: capwatch's own child enters
//! the cgroup, sets the user and capabilities, and execs the command, whose first exec starts
//! what is the application's.

use std::{
    ffi::{CString, OsString},
    fs,
    os::unix::process::{CommandExt, ExitStatusExt},
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant, SystemTime},
};

use tokio::signal::unix::{signal, SignalKind};

use crate::{
    advice::Report,
    attribution::Attribution,
    capsets::CapSets,
    cgroup::Hierarchy,
    clock,
    containers::{catalog::Catalog, docker::Event, Container, Granted, Runtime},
    error::Error,
    monitor::{Monitor, Step},
    names, probe, query, selftest,
    store::{writer::Writer, Store},
};

/// How long the processes left in the cgroup have after a signal before they are killed.
const GRACE: Duration = Duration::from_secs(10);

/// What to run and how.
#[derive(Debug, Clone)]
pub struct Launch {
    pub command: Vec<OsString>,
    /// None: as capwatch runs (root).
    pub user: Option<User>,
    /// The bounding set to start from; for a non-root user, also its ambient set.
    pub caps: u64,
    /// Whether `caps` was asked for (`--caps`): a non-root user then holds them.
    pub caps_asked: bool,
    pub probe: probe::Choice,
}

impl Launch {
    fn non_root(&self) -> bool {
        self.user.as_ref().is_some_and(|u| u.uid != 0)
    }

    /// The ambient set: what a non-root user holds, only where `--caps` asked for it.
    fn ambient(&self) -> u64 {
        if self.non_root() && self.caps_asked {
            self.caps
        } else {
            0
        }
    }

    /// The effective set the command starts with: root's bounding set, or a user's ambient set.
    fn effective(&self) -> u64 {
        if self.non_root() {
            self.ambient()
        } else {
            self.caps
        }
    }
}

/// A user to run as, resolved before the fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl User {
    /// A user by name or number, as the password database knows it.
    pub fn lookup(wanted: &str) -> Result<Self, Error> {
        let unknown = || Error::Usage(format!("no user \"{}\" on this host", names::shown(wanted)));
        let c_name = CString::new(wanted).map_err(|_| unknown())?;
        // SAFETY: getpwnam/getpwuid return a pointer into static storage or null; it is read at
        // once, before any other call could reuse it.
        let entry = unsafe {
            match wanted.parse::<u32>() {
                Ok(uid) => libc::getpwuid(uid),
                Err(_) => libc::getpwnam(c_name.as_ptr()),
            }
        };
        if entry.is_null() {
            // A bare number the database does not know is still a uid, with its own gid.
            return wanted
                .parse::<u32>()
                .map(|uid| User { name: uid.to_string(), uid, gid: uid, groups: vec![uid] })
                .map_err(|_| unknown());
        }
        // SAFETY: non-null, from the database, with a NUL-terminated name.
        let (name, uid, gid) = unsafe {
            let entry = &*entry;
            (std::ffi::CStr::from_ptr(entry.pw_name).to_string_lossy().into_owned(), entry.pw_uid, entry.pw_gid)
        };
        Ok(User { groups: groups_of(&name, gid), name, uid, gid })
    }

    /// The user who ran `sudo capwatch run`, if capwatch runs under sudo.
    pub fn invoking() -> Option<Result<Self, Error>> {
        let uid = std::env::var("SUDO_UID").ok()?;
        (uid != "0").then(|| Self::lookup(&uid))
    }
}

/// The user's groups, its primary one first (getgrouplist(3)).
fn groups_of(name: &str, gid: u32) -> Vec<u32> {
    let Ok(c_name) = CString::new(name) else { return vec![gid] };
    let mut groups = vec![0 as libc::gid_t; 256];
    let mut count = groups.len() as libc::c_int;
    // SAFETY: `groups` holds `count` entries; the call writes at most that many.
    let rc = unsafe { libc::getgrouplist(c_name.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
    if rc < 0 {
        return vec![gid];
    }
    groups.truncate(count.max(0) as usize);
    groups
}

/// What the run found, and how the command ended.
pub struct Outcome {
    pub report: Report,
    /// The command's exit status as a shell gives it: its code, or 128 and the signal.
    pub status: i32,
}

pub async fn run(launch: Launch) -> Result<Outcome, Error> {
    if launch.command.is_empty() {
        return Err(Error::Usage("name the command to run: capwatch run [OPTIONS] -- CMD [ARGS…]".into()));
    }
    let hierarchy = Hierarchy::find()?;
    let cgroup = RunCgroup::create(&hierarchy)?;
    let scratch = Scratch::create()?;
    let scope = hierarchy.scope(Path::new(&cgroup.path), true)?;
    let mut monitor = Monitor::start(
        probe::Options {
            scope,
            backend: launch.probe.backend(),
            maps: Default::default(),
            syscall_sets: true,
            reads: probe::Reads::Casts,
        },
        hierarchy.clone(),
    )?;
    let sight = selftest::run(&mut monitor, &hierarchy, Path::new(&cgroup.path), &selftest::this_program());

    let own_bounding = crate::containers::proc_caps(std::process::id()).1;
    let mut store = Store::open(&scratch.0)?;
    let mut writer = Writer::new(store.begin_run(monitor.probe().backend().name(), own_bounding)?);
    let container = container_of(&launch, &cgroup.path);
    let id = container.id.clone();
    let mut attribution = Attribution::new(hierarchy.clone(), Catalog::default(), Default::default());
    attribution.apply(Event::Started(Box::new(container)));

    let mut child = spawn(&launch, &cgroup.dir.join("cgroup.procs"))?;
    let handler = |kind| signal(kind).map_err(|e| Error::Usage(format!("cannot catch signals to pass them on: {e}")));
    let (mut interrupt, mut terminate) = (handler(SignalKind::interrupt())?, handler(SignalKind::terminate())?);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut status = None;
    let mut signalled: Option<Instant> = None;
    loop {
        tokio::select! {
            step = monitor.next() => {
                let step = step?;
                let observations = attribution.attribute(&monitor, step.changes());
                writer.note(&observations);
                if let Step::Drained(_) = step {
                    writer.note_containers(attribution.take_changed_containers().0);
                    writer.write(&mut store)?;
                }
            }
            _ = interrupt.recv() => { cgroup.signal(libc::SIGINT); signalled.get_or_insert_with(Instant::now); }
            _ = terminate.recv() => { cgroup.signal(libc::SIGTERM); signalled.get_or_insert_with(Instant::now); }
            _ = tick.tick() => {
                if status.is_none() {
                    status = child.try_wait().ok().flatten();
                }
                // Daemons the command started live in the cgroup too: the run lasts while any do.
                if status.is_some() && !cgroup.populated() {
                    break;
                }
                if signalled.is_some_and(|at| at.elapsed() > GRACE) {
                    cgroup.kill();
                }
            }
        }
    }
    let changes = monitor.drain()?;
    let mut observations = attribution.attribute(&monitor, &changes);
    observations.extend(attribution.flush(&monitor));
    writer.note(&observations);
    attribution.apply(Event::Exited { id: id.clone(), at: clock::rfc3339(SystemTime::now()) });
    writer.note_containers(attribution.take_changed_containers().0);
    writer.write(&mut store)?;
    drop(store);
    drop(monitor);

    let mut report = query::report(&scratch.0, &id)?;
    report.uncertain.extend(sight.warnings());
    let status = status.map_or(1, |s| s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)));
    Ok(Outcome { report, status })
}

/// The command as the container of its cgroup: named after its program, holding what it starts
/// with.
fn container_of(launch: &Launch, cgroup: &str) -> Container {
    let now = SystemTime::now();
    let nanos = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let program = Path::new(&launch.command[0])
        .file_name()
        .map_or_else(|| launch.command[0].to_string_lossy().into_owned(), |name| name.to_string_lossy().into_owned());
    Container {
        id: format!("{:08x}{nanos:056x}", std::process::id()),
        name: program,
        image: None,
        runtime: Runtime::Command,
        pod_uid: None,
        cgroup: cgroup.to_string(),
        init_pid: None,
        created_at: None,
        started_at: Some(clock::rfc3339(now)),
        exited_at: None,
        granted: Some(Granted {
            cap_eff: Some(launch.effective()),
            cap_bnd: Some(launch.caps),
            user: launch.user.as_ref().map(|u| u.name.clone()),
            ..Granted::default()
        }),
        layers: Vec::new(),
    }
}

/// Starts the command: the child restores every signal's default action, enters the cgroup,
/// keeps only the bounding set asked for, becomes the user (holding the asked capabilities as
/// ambient ones), then execs.
fn spawn(launch: &Launch, procs: &Path) -> Result<Child, Error> {
    let procs = CString::new(procs.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Usage("a cgroup path with a NUL byte".into()))?;
    let mut command = Command::new(&launch.command[0]);
    command.args(&launch.command[1..]);
    let last_cap = names::mask_bits(names::all_capabilities()).max().unwrap_or(40);
    let (caps, user) = (launch.caps, launch.user.clone());
    let ambient = launch.ambient();
    let sets = CapSets::of(ambient, ambient, ambient);
    // SAFETY: between fork and exec the closure makes only raw syscalls on memory prepared
    // before the fork.
    unsafe {
        command.pre_exec(move || {
            // The command starts with every signal's default action, as a container's does:
            // a capwatch started in the background (signals ignored) passes Ctrl-C on all the same.
            for signal in 1..libc::SIGRTMIN() {
                libc::signal(signal, libc::SIG_DFL);
            }
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0\n".as_ptr().cast(), 2) != 2 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            for cap in 0..=last_cap {
                if caps & (1 << cap) == 0 && libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(user) = &user {
                let keep = ambient != 0;
                if keep && libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::setgroups(user.groups.len(), user.groups.as_ptr()) != 0
                    || libc::setgid(user.gid) != 0
                    || libc::setuid(user.uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if keep {
                    if !sets.set() {
                        return Err(std::io::Error::last_os_error());
                    }
                    for cap in 0..=last_cap {
                        if ambient & (1 << cap) != 0
                            && libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, cap as libc::c_ulong, 0, 0)
                                != 0
                        {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                }
            }
            Ok(())
        });
    }
    command
        .spawn()
        .map_err(|e| Error::Usage(format!("cannot start {}: {e}", names::shown(&launch.command[0].to_string_lossy()))))
}

/// The run's own cgroup, at the top of the hierarchy; killed and removed when dropped.
struct RunCgroup {
    path: String,
    dir: PathBuf,
}

impl RunCgroup {
    fn create(hierarchy: &Hierarchy) -> Result<Self, Error> {
        let path = format!("/capwatch-run-{}", std::process::id());
        let dir = hierarchy.dir(Path::new(&path));
        // One left by a run of the same pid that was killed.
        let _ = fs::remove_dir(&dir);
        fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Self { path, dir })
    }

    fn pids(&self) -> Vec<i32> {
        let procs = fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        procs.lines().filter_map(|l| l.trim().parse().ok()).collect()
    }

    /// Passes a signal to every process of the cgroup: the command, and daemons it started.
    fn signal(&self, signal: libc::c_int) {
        for pid in self.pids() {
            // SAFETY: kill(2) on a pid read from the cgroup.
            unsafe { libc::kill(pid, signal) };
        }
    }

    fn populated(&self) -> bool {
        let events = fs::read_to_string(self.dir.join("cgroup.events")).unwrap_or_default();
        events.lines().any(|l| l == "populated 1")
    }

    /// Kills what is left (cgroup.kill where the kernel has it, else each process).
    fn kill(&self) {
        if fs::write(self.dir.join("cgroup.kill"), "1").is_err() {
            self.signal(libc::SIGKILL);
        }
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.populated() && Instant::now() < deadline {
            self.kill();
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// The run's store, in a temporary directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn create() -> Result<Self, Error> {
        let dir = std::env::temp_dir().join(format!("capwatch-run-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
