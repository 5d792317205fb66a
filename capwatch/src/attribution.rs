//! The attribution stage: each step's changes become observations that carry everything their
//! readers need, computed once — the cgroup's path (named at first sight, while the cgroup
//! exists), its container, a check's call site (its first occurrence's kernel stack) and a
//! failure's cause and sentence. The store writer, the JSON lines, the metrics, the summaries and
//! `trace` only read observations.
//!
//! A container's runtime describes it (name, image, what it was granted, its seccomp profile) a
//! moment after its first processes run. While the runtime's API is followed, what a container
//! does before its description arrives waits for it, up to `HOLD`, so that the first lines name
//! it and judge its failures under its own profile.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use capwatch_common::{CallSet, CallsKey, CapKey, ExecKey, FailKey, Loss, Totals};

use crate::{
    aggregate::{Change, Grown, NewCalls},
    cause::{self, Explained},
    cgroup::Hierarchy,
    containers::{catalog::Catalog, docker, Container, Runtime},
    filecaps::{self, Found},
    monitor::Monitor,
    names, selftest,
    symbols::Kallsyms,
};

/// How long a new container's observations wait for its runtime's description.
pub const HOLD: Duration = Duration::from_secs(3);

/// Frames of a first occurrence's kernel stack kept as its call site.
const CALL_SITE_DEPTH: usize = 4;

/// Where something was observed.
#[derive(Debug, Clone)]
pub struct Place {
    pub cgroup_id: u64,
    /// The cgroup's path in the hierarchy, or `#<id>` when it was gone before it could be named.
    pub cgroup: Arc<str>,
    pub container: Option<Arc<Container>>,
}

/// An aggregate that is new or grew, where it was seen, and what the attribution found about it.
#[derive(Debug, Clone)]
pub struct Observed<K, D> {
    pub key: K,
    pub totals: Totals,
    /// Occurrences since this key's previous observation.
    pub added: u64,
    /// Seen for the first time.
    pub first: bool,
    pub place: Place,
    pub detail: D,
}

/// A capability check, with its call site ("f ← g ← h", innermost first) where its kernel stack
/// was kept.
pub type Check = Observed<CapKey, Option<Arc<str>>>;
/// A failing syscall, with its cause and sentence.
pub type Failure = Observed<FailKey, Arc<Explained>>;
/// A program exec'd, with the capabilities its file carries.
pub type Exec = Observed<ExecKey, Arc<ExecFile>>;

/// Syscalls a cgroup's processes of one origin made: all so far (`made`), and those new.
#[derive(Debug, Clone)]
pub struct Calls {
    pub key: CallsKey,
    pub made: CallSet,
    pub added: CallSet,
    pub place: Place,
}

/// An exec'd program's file, as read when it was first exec'd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecFile {
    pub path: String,
    pub found: Found,
}

#[derive(Debug, Clone)]
pub enum Observation {
    Check(Check),
    Failure(Failure),
    Exec(Exec),
    Calls(Calls),
    /// `total` occurrences of `loss` so far, `added` of them since the previous report.
    Lost {
        loss: Loss,
        total: u64,
        added: u64,
    },
}

/// A cgroup as first seen: its path and the id of its container, if it is one's.
#[derive(Debug, Clone)]
struct Seen {
    cgroup: Arc<str>,
    container: Option<String>,
    at: Instant,
    /// A capwatch self-test's throwaway cgroup (another capwatch's: this one's never gets here):
    /// what it does is nobody's, so it is observed by no reader.
    selftest: bool,
}

pub struct Attribution {
    hierarchy: Hierarchy,
    cgroups: HashMap<u64, Seen>,
    catalog: Catalog,
    kallsyms: Option<Kallsyms>,
    call_sites: HashMap<CapKey, Option<Arc<str>>>,
    explained: HashMap<FailKey, Arc<Explained>>,
    exec_files: HashMap<ExecKey, Arc<ExecFile>>,
    /// (capability, syscall) pairs the kernel was seen checking: a seccomp coupling that the
    /// kernel also requires is said so.
    kernel_checks: BTreeSet<(u32, u32)>,
    /// Whether a runtime's API is followed, so that new containers will be described.
    runtime_connected: bool,
    /// Changes waiting for their container's description, in arrival order.
    held: Vec<Change>,
    /// Cgroups that are gone, kept until no change of theirs waits: a container can start, run
    /// and be removed before its runtime describes it (`docker run --rm` of a short command).
    departed: HashSet<u64>,
}

impl Attribution {
    pub fn new(hierarchy: Hierarchy, catalog: Catalog, kernel_checks: BTreeSet<(u32, u32)>) -> Self {
        Self {
            hierarchy,
            cgroups: HashMap::new(),
            catalog,
            kallsyms: Kallsyms::load(),
            call_sites: HashMap::new(),
            explained: HashMap::new(),
            exec_files: HashMap::new(),
            kernel_checks,
            runtime_connected: false,
            held: Vec::new(),
            departed: HashSet::new(),
        }
    }

    /// Attributes a step's changes, with those held earlier whose wait is over.
    pub fn attribute(&mut self, monitor: &Monitor, changes: &[Change]) -> Vec<Observation> {
        for change in changes {
            if let Some(id) = cgroup_of(change) {
                self.name(id);
            }
            match change {
                Change::Check(grown) => drop(self.kernel_checks.insert((grown.key.cap, grown.key.syscall))),
                // Read now, while the process that exec'd it, or another of its cgroup, runs.
                Change::Exec(grown) if grown.first => self.read_exec_file(grown),
                _ => {}
            }
        }
        let mut ready = Vec::new();
        for change in std::mem::take(&mut self.held).into_iter().chain(changes.iter().copied()) {
            if cgroup_of(&change).is_some_and(|id| self.is_selftest(id)) {
                continue;
            }
            if cgroup_of(&change).is_some_and(|id| self.waiting(id)) {
                hold(&mut self.held, change);
            } else {
                ready.push(change);
            }
        }
        let observations = ready.into_iter().map(|change| self.observe(monitor, change)).collect();
        self.forget(monitor.gone());
        observations
    }

    /// Forgets what was kept for cgroups that are gone, once their last observations are made;
    /// their exited containers go once written.
    fn forget(&mut self, gone: &HashSet<u64>) {
        self.departed.extend(gone);
        if self.departed.is_empty() {
            return;
        }
        let waiting: HashSet<u64> = self.held.iter().filter_map(cgroup_of).collect();
        let gone: HashSet<u64> = self.departed.extract_if(|id| !waiting.contains(id)).collect();
        for id in &gone {
            if let Some(container) = self.cgroups.remove(id).and_then(|seen| seen.container) {
                let live = self.cgroups.values().any(|s| s.container.as_deref() == Some(&container));
                if !live {
                    let cgroup = self.catalog.get(&container).map(|c| c.cgroup.clone()).unwrap_or_default();
                    let removed = !cgroup.is_empty() && !self.hierarchy.dir(Path::new(&cgroup)).exists();
                    let now = crate::clock::rfc3339(std::time::SystemTime::now());
                    self.catalog.retire(&container, removed.then_some(now.as_str()));
                }
            }
        }
        self.call_sites.retain(|k, _| !gone.contains(&k.cgroup_id));
        self.explained.retain(|k, _| !gone.contains(&k.cgroup_id));
        self.exec_files.retain(|k, _| !gone.contains(&k.cgroup_id));
    }

    /// Attributes everything held, whatever its wait: the daemon is stopping.
    pub fn flush(&mut self, monitor: &Monitor) -> Vec<Observation> {
        std::mem::take(&mut self.held).into_iter().map(|change| self.observe(monitor, change)).collect()
    }

    /// Every aggregate the monitor holds, as observations that add nothing: the totals.
    pub fn totals(&mut self, monitor: &Monitor) -> Vec<Observation> {
        let aggregates = monitor.aggregates();
        let caps = aggregates
            .caps()
            .iter()
            .map(|(&key, &totals)| Change::Check(Grown { key, totals, added: 0, first: false }));
        let failures = aggregates
            .failures()
            .iter()
            .map(|(&key, &totals)| Change::Failure(Grown { key, totals, added: 0, first: false }));
        let all: Vec<Change> =
            caps.chain(failures).filter(|change| !cgroup_of(change).is_some_and(|id| self.is_selftest(id))).collect();
        all.into_iter().map(|change| self.observe(monitor, change)).collect()
    }

    /// What the runtime's API said: a container started or exited, or the API came or went.
    pub fn apply(&mut self, event: docker::Event) -> Option<Arc<Container>> {
        match event {
            docker::Event::Connected => {
                self.runtime_connected = true;
                None
            }
            docker::Event::Disconnected => {
                self.runtime_connected = false;
                None
            }
            event => {
                let container = self.catalog.apply(event)?;
                // Exited after all its cgroups were gone: nothing more will be seen of it.
                let live = self.cgroups.values().any(|s| s.container.as_deref() == Some(container.id.as_str()));
                if !container.running() && !live {
                    self.catalog.retire(&container.id, None);
                }
                Some(container)
            }
        }
    }

    /// Containers learned or changed since the previous call, for the store; and the ids of the
    /// containers forgotten since, which exited and are written.
    pub fn take_changed_containers(&mut self) -> (Vec<Arc<Container>>, Vec<Arc<Container>>) {
        self.catalog.take_changed()
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Names a cgroup the first time it is seen, while its directory exists.
    fn name(&mut self, id: u64) {
        if self.cgroups.contains_key(&id) {
            return;
        }
        let path = self.hierarchy.path(id);
        let selftest = path.as_deref().is_some_and(selftest::is_throwaway);
        let hierarchy = &self.hierarchy;
        let container = path
            .as_deref()
            .filter(|_| !selftest)
            .and_then(|p| self.catalog.learn(p, |cgroup| hierarchy.dir(Path::new(cgroup))));
        let cgroup = path.unwrap_or_else(|| format!("#{id}")).into();
        self.cgroups.insert(id, Seen { cgroup, container, at: Instant::now(), selftest });
    }

    fn is_selftest(&self, id: u64) -> bool {
        self.cgroups.get(&id).is_some_and(|s| s.selftest)
    }

    /// A new container whose runtime has not described it yet, while it still may.
    fn waiting(&self, id: u64) -> bool {
        let Some(seen) = self.cgroups.get(&id) else { return false };
        let undescribed =
            seen.container.as_deref().and_then(|c| self.catalog.get(c)).is_some_and(|c| c.granted.is_none());
        self.runtime_connected && undescribed && seen.at.elapsed() < HOLD
    }

    fn place(&self, id: u64) -> Place {
        let seen = self.cgroups.get(&id);
        Place {
            cgroup_id: id,
            cgroup: seen.map_or_else(|| format!("#{id}").into(), |s| Arc::clone(&s.cgroup)),
            container: seen.and_then(|s| s.container.as_deref()).and_then(|c| self.catalog.get(c)).cloned(),
        }
    }

    fn observe(&mut self, monitor: &Monitor, change: Change) -> Observation {
        match change {
            Change::Check(grown) => {
                let detail = self.call_site(monitor, &grown.key, grown.totals.stack_id);
                Observation::Check(self.observed(grown, detail))
            }
            Change::Failure(grown) => {
                let place = self.place(grown.key.cgroup_id);
                let detail = match self.explained.get(&grown.key) {
                    Some(explained) => Arc::clone(explained),
                    None => {
                        let explained =
                            Arc::new(cause::explain(&grown.key, place.container.as_deref(), &self.kernel_checks));
                        self.explained.insert(grown.key, Arc::clone(&explained));
                        explained
                    }
                };
                Observation::Failure(self.observed(grown, detail))
            }
            Change::Exec(grown) => {
                let detail = self.exec_file(&grown);
                Observation::Exec(self.observed(grown, detail))
            }
            Change::Calls(NewCalls { key, made, added }) => {
                Observation::Calls(Calls { key, made, added, place: self.place(key.cgroup_id) })
            }
            Change::Lost { loss, total, added } => Observation::Lost { loss, total, added },
        }
    }

    /// Reads an exec'd program's file capabilities through the process that exec'd it, or else
    /// through another process of its cgroup (they share its root).
    fn read_exec_file(&mut self, grown: &Grown<ExecKey>) {
        let path = exec_path(&grown.key);
        let mut found = filecaps::through_process(grown.totals.sample.pid, &path);
        if let (Found::Unreadable { .. }, Some(seen)) = (&found, self.cgroups.get(&grown.key.cgroup_id)) {
            let procs = std::fs::read_to_string(self.hierarchy.dir(Path::new(&*seen.cgroup)).join("cgroup.procs"));
            let other = procs.ok().and_then(|p| p.lines().find_map(|pid| pid.trim().parse::<u32>().ok()));
            if let Some(pid) = other {
                found = filecaps::through_process(pid, &path);
            }
        }
        self.exec_files.insert(grown.key, Arc::new(ExecFile { path, found }));
    }

    /// The file read at the exec, or, where its process was already gone, through the layers of
    /// its container's image, or capwatch's own root for a command `capwatch run` started (it
    /// shares capwatch's mounts).
    fn exec_file(&mut self, grown: &Grown<ExecKey>) -> Arc<ExecFile> {
        let known = self.exec_files.get(&grown.key).cloned();
        if let Some(file) = known.as_ref().filter(|f| !matches!(f.found, Found::Unreadable { .. })) {
            return Arc::clone(file);
        }
        let path = exec_path(&grown.key);
        let container = self.place(grown.key.cgroup_id).container;
        let layers: Vec<std::path::PathBuf> =
            container.as_ref().map(|c| c.layers.iter().map(Into::into).collect()).unwrap_or_default();
        let on_this_host = container.is_some_and(|c| c.runtime == Runtime::Command) && path.starts_with('/');
        let found = match (known, layers.is_empty()) {
            _ if on_this_host => filecaps::through_process(std::process::id(), &path),
            (_, false) => filecaps::through_layers(&layers, &path),
            (Some(file), true) => file.found.clone(),
            (None, true) => Found::Unreadable { reason: "its process was gone and no image layers are known".into() },
        };
        let file = Arc::new(ExecFile { path, found });
        self.exec_files.insert(grown.key, Arc::clone(&file));
        file
    }

    fn observed<K, D>(&self, grown: Grown<K>, detail: D) -> Observed<K, D>
    where
        K: Copy + HasCgroup,
    {
        let place = self.place(grown.key.cgroup_id());
        Observed { key: grown.key, totals: grown.totals, added: grown.added, first: grown.first, place, detail }
    }

    /// The kernel functions that made a check, resolved once per key from its first kernel stack.
    fn call_site(&mut self, monitor: &Monitor, key: &CapKey, stack_id: i32) -> Option<Arc<str>> {
        if let Some(Some(site)) = self.call_sites.get(key) {
            return Some(Arc::clone(site));
        }
        // A stack may arrive after the key (its first announcement was lost): try again then.
        let site: Option<Arc<str>> = monitor
            .stack(stack_id)
            .and_then(|stack| self.kallsyms.as_ref()?.call_site(&stack, CALL_SITE_DEPTH))
            .map(Into::into);
        self.call_sites.insert(*key, site.clone());
        site
    }
}

/// Keys that name their cgroup.
pub trait HasCgroup {
    fn cgroup_id(&self) -> u64;
}

impl HasCgroup for CapKey {
    fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }
}

impl HasCgroup for FailKey {
    fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }
}

impl HasCgroup for ExecKey {
    fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }
}

/// An exec'd program's path, as the exec named it.
pub fn exec_path(key: &ExecKey) -> String {
    names::comm(&key.path)
}

fn cgroup_of(change: &Change) -> Option<u64> {
    match change {
        Change::Check(grown) => Some(grown.key.cgroup_id),
        Change::Failure(grown) => Some(grown.key.cgroup_id),
        Change::Exec(grown) => Some(grown.key.cgroup_id),
        Change::Calls(calls) => Some(calls.key.cgroup_id),
        Change::Lost { .. } => None,
    }
}

/// Holds a change, folding it into one already held for the same key.
fn hold(held: &mut Vec<Change>, change: Change) {
    if let Change::Calls(newer) = &change {
        let same = held.iter_mut().find_map(|h| match h {
            Change::Calls(h) if h.key == newer.key => Some(h),
            _ => None,
        });
        if let Some(same) = same {
            same.made = newer.made;
            newer.added.iter().for_each(|n| same.added.insert(n));
            return;
        }
    }
    let same = held.iter_mut().find_map(|h| match (h, &change) {
        (Change::Check(h), Change::Check(c)) if h.key == c.key => {
            Some((&mut h.totals, &mut h.added, c.totals, c.added))
        }
        (Change::Failure(h), Change::Failure(c)) if h.key == c.key => {
            Some((&mut h.totals, &mut h.added, c.totals, c.added))
        }
        _ => None,
    });
    match same {
        Some((totals, added, newer, more)) => {
            *totals = newer;
            *added += more;
        }
        None => held.push(change),
    }
}
