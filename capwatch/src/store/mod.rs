//! The embedded store: every container's metadata and every aggregate, in SQLite (WAL) under the
//! state directory. The daemon writes it at each drain (`writer`); the CLI reads it, with or
//! without a daemon running, as the evidence the advice and the explanations judge.
//!
//! The kernel's counters start at zero each time the daemon loads its programs, so aggregates are
//! kept per daemon run and summed when read: rewriting a run's absolute totals is idempotent, and
//! a daemon killed at any moment leaves every earlier write intact.

pub mod writer;

use std::{
    collections::{BTreeSet, HashMap},
    fs::{File, OpenOptions},
    io::{Read, Write},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use capwatch_common::{CapKey, FailKey, Loss, Origin, Sample, Seccomp, Verdict};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

pub use self::writer::Writer;
use crate::{
    attribution::{Calls, Check, Exec, Failure},
    cause::Explained,
    clock,
    containers::Container,
    error::Error,
    evidence::{CallEvidence, CheckEvidence, ExecEvidence, FailureEvidence},
    verification::Verification,
};

/// The database file in the state directory.
pub const FILE: &str = "capwatch.db";

/// Bumped when the schema changes; older stores are migrated, newer ones refused.
const SCHEMA_VERSION: i64 = 5;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    started_ns INTEGER NOT NULL,
    backend    TEXT NOT NULL,
    cap_bnd    INTEGER
);
CREATE TABLE IF NOT EXISTS containers (
    id        TEXT PRIMARY KEY,
    name      TEXT NOT NULL,
    json      TEXT NOT NULL,
    last_seen_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cgroups (
    run_id       INTEGER NOT NULL,
    cgroup_id    INTEGER NOT NULL,
    path         TEXT NOT NULL,
    container_id TEXT,
    PRIMARY KEY (run_id, cgroup_id)
);
CREATE INDEX IF NOT EXISTS cgroups_by_container ON cgroups (container_id);
CREATE TABLE IF NOT EXISTS cap_checks (
    run_id INTEGER NOT NULL, cgroup_id INTEGER NOT NULL,
    cap INTEGER NOT NULL, syscall INTEGER NOT NULL, verdict INTEGER NOT NULL,
    origin INTEGER NOT NULL, flags INTEGER NOT NULL,
    count INTEGER NOT NULL, first_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL,
    tid INTEGER NOT NULL, pid INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
    comm TEXT NOT NULL, call_site TEXT, judged INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, cgroup_id, cap, syscall, verdict, origin, flags)
);
CREATE TABLE IF NOT EXISTS failures (
    run_id INTEGER NOT NULL, cgroup_id INTEGER NOT NULL,
    syscall INTEGER NOT NULL, errno INTEGER NOT NULL, origin INTEGER NOT NULL,
    fail_uid INTEGER NOT NULL, seccomp INTEGER NOT NULL, denied INTEGER NOT NULL,
    count INTEGER NOT NULL, first_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL,
    tid INTEGER NOT NULL, pid INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
    comm TEXT NOT NULL,
    cause TEXT, explanation TEXT,
    PRIMARY KEY (run_id, cgroup_id, syscall, errno, origin, fail_uid, seccomp, denied)
);
CREATE TABLE IF NOT EXISTS losses (
    run_id INTEGER NOT NULL, loss INTEGER NOT NULL, at_ns INTEGER NOT NULL, added INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS execs (
    run_id INTEGER NOT NULL, cgroup_id INTEGER NOT NULL, origin INTEGER NOT NULL, path TEXT NOT NULL,
    count INTEGER NOT NULL, first_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL,
    pid INTEGER NOT NULL, comm TEXT NOT NULL, found TEXT NOT NULL,
    PRIMARY KEY (run_id, cgroup_id, origin, path)
);
CREATE TABLE IF NOT EXISTS calls (
    run_id INTEGER NOT NULL, cgroup_id INTEGER NOT NULL, origin INTEGER NOT NULL, filtered INTEGER NOT NULL,
    syscall INTEGER NOT NULL,
    PRIMARY KEY (run_id, cgroup_id, origin, filtered, syscall)
);
CREATE TABLE IF NOT EXISTS verifications (
    container_id TEXT NOT NULL, at_ns INTEGER NOT NULL, json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS verifications_by_container ON verifications (container_id);
";

/// Schema 1 kept failures without the evidence of their cause: they are kept, with the failing
/// uid taken from their sample and the rest unknown, in the table the schema defines.
const MIGRATE_1: &str = "
ALTER TABLE runs ADD COLUMN cap_bnd INTEGER;
ALTER TABLE cap_checks ADD COLUMN judged INTEGER NOT NULL DEFAULT 0;
ALTER TABLE failures RENAME TO failures_v1;
{SCHEMA}
INSERT INTO failures (run_id, cgroup_id, syscall, errno, origin, fail_uid, seccomp, denied, count, first_ns, last_ns,
    tid, pid, uid, gid, comm)
    SELECT run_id, cgroup_id, syscall, errno, origin, uid, 3, 0, count, first_ns, last_ns, tid, pid, uid, gid, comm
    FROM failures_v1;
DROP TABLE failures_v1;
";

/// Schema 2 kept no judged cause with a failure (those are judged when read), and no judgement of
/// a check's first kernel stack (its call site's name decides).
const MIGRATE_2: &str = "
ALTER TABLE runs ADD COLUMN cap_bnd INTEGER;
ALTER TABLE cap_checks ADD COLUMN judged INTEGER NOT NULL DEFAULT 0;
ALTER TABLE failures ADD COLUMN cause TEXT;
ALTER TABLE failures ADD COLUMN explanation TEXT;
";

/// Beside the database: held (flock) by the one daemon that writes it.
pub const LOCK_FILE: &str = "daemon.lock";

pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The writer's lock, released when the store is dropped or the daemon dies.
    _lock: Option<File>,
}

/// One daemon run's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunId(i64);

/// A cgroup seen in a run, and its container if it belongs to one.
pub struct CgroupRow<'a> {
    pub cgroup_id: u64,
    pub path: &'a str,
    pub container_id: Option<&'a str>,
}

/// What one drain writes: absolute totals of this run.
pub struct Batch<'a> {
    pub cgroups: &'a [CgroupRow<'a>],
    pub containers: &'a [Arc<Container>],
    pub checks: &'a [&'a Check],
    pub failures: &'a [&'a Failure],
    pub execs: &'a [&'a Exec],
    pub calls: &'a [&'a Calls],
    /// What the kernel side could not deliver since the previous write: (kind, how many).
    pub losses: &'a [(Loss, u64)],
}

impl Store {
    /// Opens (creating if needed) the store for writing: one writer at a time, so that two
    /// daemons never count the same observations twice.
    pub fn open(state_dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(state_dir).map_err(|e| Error::io(state_dir, e))?;
        let lock = lock(state_dir)?;
        let path = state_dir.join(FILE);
        let conn = Connection::open(&path).map_err(|e| corrupt(&path, e))?;
        let store = Self { conn, path, _lock: Some(lock) };
        store.prepare(true)?;
        Ok(store)
    }

    /// Opens an existing store read-only, as the CLI does.
    pub fn open_read_only(state_dir: &Path) -> Result<Self, Error> {
        let path = state_dir.join(FILE);
        if !path.exists() {
            return Err(Error::NoStore(state_dir.to_path_buf()));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = if on_read_only_filesystem(state_dir) {
            // A WAL database needs its shared-memory file, which a read-only filesystem cannot
            // hold; no daemon can write there, so the file is read as it stands.
            let escaped = path.display().to_string().replace('%', "%25").replace('?', "%3f").replace('#', "%23");
            Connection::open_with_flags(format!("file:{escaped}?immutable=1"), flags | OpenFlags::SQLITE_OPEN_URI)
        } else {
            Connection::open_with_flags(&path, flags)
        }
        .map_err(|e| corrupt(&path, e))?;
        let store = Self { conn, path, _lock: None };
        store.prepare(false)?;
        Ok(store)
    }

    fn prepare(&self, writable: bool) -> Result<(), Error> {
        let fail = |e| corrupt(&self.path, e);
        self.conn.busy_timeout(Duration::from_secs(5)).map_err(fail)?;
        // A file that is not a database fails here, before anything is written to it.
        let version: i64 = self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(fail)?;
        self.conn.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0)).map_err(fail).and_then(|ok| {
            if ok == "ok" {
                Ok(())
            } else {
                Err(Error::CorruptStore { path: self.path.clone(), reason: ok })
            }
        })?;
        if version > SCHEMA_VERSION {
            return Err(Error::NewerStore { path: self.path.clone(), version });
        }
        if writable {
            self.conn.pragma_update(None, "journal_mode", "WAL").map_err(fail)?;
            self.conn.pragma_update(None, "synchronous", "NORMAL").map_err(fail)?;
            let migration = match version {
                1 => MIGRATE_1.replace("{SCHEMA}", SCHEMA),
                2 => MIGRATE_2.to_string(),
                _ => String::new(),
            };
            self.conn.execute_batch(&format!("BEGIN; {migration} {SCHEMA} COMMIT;")).map_err(fail)?;
            self.conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(fail)?;
        } else if version == 0 {
            return Err(Error::NoStore(self.path.parent().unwrap_or(Path::new(".")).to_path_buf()));
        } else if version < SCHEMA_VERSION {
            return Err(Error::OlderStore { path: self.path.clone(), version });
        }
        Ok(())
    }

    /// A daemon run begins: with its backend and the host's bounding set (what runtimes there can
    /// grant at all).
    pub fn begin_run(&mut self, backend: &str, cap_bnd: Option<u64>) -> Result<RunId, Error> {
        self.conn
            .execute(
                "INSERT INTO runs (started_ns, backend, cap_bnd) VALUES (?1, ?2, ?3)",
                params![unix_ns(SystemTime::now()), backend, cap_bnd.map(|b| b as i64)],
            )
            .map_err(|e| corrupt(&self.path, e))?;
        Ok(RunId(self.conn.last_insert_rowid()))
    }

    /// Writes one drain in a single transaction: all of it or none.
    pub fn write(&mut self, run: RunId, batch: &Batch<'_>) -> Result<(), Error> {
        let path = self.path.clone();
        let fail = |e| corrupt(&path, e);
        let tx = self.conn.transaction().map_err(fail)?;
        {
            let mut cgroup = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO cgroups (run_id, cgroup_id, path, container_id) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(fail)?;
            for row in batch.cgroups {
                cgroup.execute(params![run.0, row.cgroup_id as i64, row.path, row.container_id]).map_err(fail)?;
            }
            let mut container = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO containers (id, name, json, last_seen_ns) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(fail)?;
            let now = unix_ns(SystemTime::now());
            for c in batch.containers {
                let json = serde_json::to_string(c.as_ref()).expect("containers serialize");
                container.execute(params![c.id, c.name, json, now]).map_err(fail)?;
            }
            let mut cap = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO cap_checks (run_id, cgroup_id, cap, syscall, verdict, origin, flags, count,
                     first_ns, last_ns, tid, pid, uid, gid, comm, call_site, judged)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
                )
                .map_err(fail)?;
            for check in batch.checks {
                let (k, t, s) = (&check.key, &check.totals, &check.totals.sample);
                cap.execute(params![
                    run.0,
                    k.cgroup_id as i64,
                    k.cap,
                    k.syscall,
                    k.verdict.raw(),
                    k.origin.raw(),
                    k.flags,
                    t.count as i64,
                    wall_ns(t.first_ns),
                    wall_ns(t.last_ns),
                    s.tid,
                    s.pid,
                    s.uid,
                    s.gid,
                    crate::names::comm(&s.comm),
                    check.detail.as_deref(),
                    t.judged
                ])
                .map_err(fail)?;
            }
            let mut failure = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO failures (run_id, cgroup_id, syscall, errno, origin, fail_uid, seccomp, denied,
                     count, first_ns, last_ns, tid, pid, uid, gid, comm, cause, explanation)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
                )
                .map_err(fail)?;
            for f in batch.failures {
                let (k, t, s) = (&f.key, &f.totals, &f.totals.sample);
                let cause = serde_json::to_string(&f.detail.cause).expect("causes serialize");
                failure
                    .execute(params![
                        run.0,
                        k.cgroup_id as i64,
                        k.syscall,
                        k.errno,
                        k.origin.raw(),
                        k.uid,
                        k.seccomp.raw(),
                        k.denied as i64,
                        t.count as i64,
                        wall_ns(t.first_ns),
                        wall_ns(t.last_ns),
                        s.tid,
                        s.pid,
                        s.uid,
                        s.gid,
                        crate::names::comm(&s.comm),
                        cause,
                        f.detail.text
                    ])
                    .map_err(fail)?;
            }
            let mut loss = tx
                .prepare_cached("INSERT INTO losses (run_id, loss, at_ns, added) VALUES (?1, ?2, ?3, ?4)")
                .map_err(fail)?;
            for &(kind, added) in batch.losses {
                loss.execute(params![run.0, kind.raw(), now, added as i64]).map_err(fail)?;
            }
            let mut exec = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO execs (run_id, cgroup_id, origin, path, count, first_ns, last_ns, pid, comm, found)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(fail)?;
            for e in batch.execs {
                let t = &e.totals;
                let found = serde_json::to_string(&e.detail.found).expect("file capabilities serialize");
                exec.execute(params![
                    run.0,
                    e.key.cgroup_id as i64,
                    e.key.origin.raw(),
                    e.detail.path,
                    t.count as i64,
                    wall_ns(t.first_ns),
                    wall_ns(t.last_ns),
                    t.sample.pid,
                    crate::names::comm(&t.sample.comm),
                    found
                ])
                .map_err(fail)?;
            }
            let mut call = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO calls (run_id, cgroup_id, origin, filtered, syscall) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(fail)?;
            for c in batch.calls {
                // Every syscall made so far: the writer keeps only the latest observation of a key.
                for syscall in c.made.iter() {
                    call.execute(params![run.0, c.key.cgroup_id as i64, c.key.origin.raw(), c.key.filtered, syscall])
                        .map_err(fail)?;
                }
            }
        }
        tx.commit().map_err(fail)
    }

    /// Every container ever seen, most recently started first.
    pub fn containers(&self) -> Result<Vec<Container>, Error> {
        let fail = |e| corrupt(&self.path, e);
        let mut stmt = self.conn.prepare("SELECT json FROM containers").map_err(fail)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(fail)?;
        let mut containers = Vec::new();
        for json in rows {
            let json = json.map_err(fail)?;
            let container: Container = serde_json::from_str(&json).map_err(|e| Error::CorruptStore {
                path: self.path.clone(),
                reason: format!("a container record: {e}"),
            })?;
            containers.push(container);
        }
        containers.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(a.name.cmp(&b.name)));
        Ok(containers)
    }

    /// A container's capability checks, summed over runs and over its cgroups; cgroup_id in
    /// the keys is 0.
    pub fn cap_checks(&self, container_id: &str) -> Result<Vec<CheckEvidence>, Error> {
        let fail = |e| corrupt(&self.path, e);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT c.cap, c.syscall, c.verdict, c.origin, c.flags, SUM(c.count), MIN(c.first_ns), MAX(c.last_ns),
                        c.tid, c.pid, c.uid, c.gid, c.comm, MAX(c.call_site), MAX(c.judged)
                 FROM cap_checks c JOIN cgroups g ON g.run_id = c.run_id AND g.cgroup_id = c.cgroup_id
                 WHERE g.container_id = ?1
                 GROUP BY c.cap, c.syscall, c.verdict, c.origin, c.flags
                 ORDER BY c.cap, c.verdict, c.syscall, c.origin",
            )
            .map_err(fail)?;
        let rows = stmt
            .query_map([container_id], |r| {
                Ok(CheckEvidence {
                    key: CapKey {
                        cgroup_id: 0,
                        cap: r.get(0)?,
                        syscall: r.get(1)?,
                        verdict: decode(r, 2, Verdict::from_raw)?,
                        origin: decode(r, 3, Origin::from_raw)?,
                        flags: r.get(4)?,
                    },
                    count: r.get::<_, i64>(5)? as u64,
                    first_seen: from_unix_ns(r.get(6)?),
                    last_seen: from_unix_ns(r.get(7)?),
                    sample: sample(r, 8)?,
                    call_site: r.get(13)?,
                    judged: r.get(14)?,
                })
            })
            .map_err(fail)?;
        rows.collect::<Result<_, _>>().map_err(fail)
    }

    /// A container's failing syscalls, summed as `cap_checks` does; the cause is the latest run's.
    pub fn failures(&self, container_id: &str) -> Result<Vec<FailureEvidence>, Error> {
        let fail = |e| corrupt(&self.path, e);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT f.syscall, f.errno, f.origin, f.fail_uid, f.seccomp, f.denied, SUM(f.count), MIN(f.first_ns), MAX(f.last_ns),
                        f.tid, f.pid, f.uid, f.gid, f.comm, MAX(f.run_id), f.cause, f.explanation
                 FROM failures f JOIN cgroups g ON g.run_id = f.run_id AND g.cgroup_id = f.cgroup_id
                 WHERE g.container_id = ?1
                 GROUP BY f.syscall, f.errno, f.origin, f.fail_uid, f.seccomp, f.denied
                 ORDER BY f.syscall, f.errno, f.origin",
            )
            .map_err(fail)?;
        let rows = stmt
            .query_map([container_id], |r| {
                let cause: Option<String> = r.get(15)?;
                let text: Option<String> = r.get(16)?;
                Ok(FailureEvidence {
                    key: FailKey {
                        cgroup_id: 0,
                        syscall: r.get(0)?,
                        errno: r.get(1)?,
                        origin: decode(r, 2, Origin::from_raw)?,
                        uid: r.get(3)?,
                        seccomp: decode(r, 4, Seccomp::from_raw)?,
                        denied: r.get::<_, i64>(5)? as u64,
                    },
                    count: r.get::<_, i64>(6)? as u64,
                    first_seen: from_unix_ns(r.get(7)?),
                    last_seen: from_unix_ns(r.get(8)?),
                    sample: sample(r, 9)?,
                    explained: match (cause.and_then(|c| serde_json::from_str(&c).ok()), text) {
                        (Some(cause), Some(text)) => Some(Explained { cause, text }),
                        _ => None,
                    },
                })
            })
            .map_err(fail)?;
        rows.collect::<Result<_, _>>().map_err(fail)
    }

    /// The programs a container exec'd, summed over runs and cgroups; what their files carry is
    /// the latest run's reading.
    pub fn execs(&self, container_id: &str) -> Result<Vec<ExecEvidence>, Error> {
        let fail = |e| corrupt(&self.path, e);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT e.origin, e.path, SUM(e.count), MIN(e.first_ns), MAX(e.last_ns), e.comm, MAX(e.run_id), e.found
                 FROM execs e JOIN cgroups g ON g.run_id = e.run_id AND g.cgroup_id = e.cgroup_id
                 WHERE g.container_id = ?1
                 GROUP BY e.origin, e.path
                 ORDER BY e.path, e.origin",
            )
            .map_err(fail)?;
        let rows = stmt
            .query_map([container_id], |r| {
                let found: String = r.get(7)?;
                Ok(ExecEvidence {
                    origin: decode(r, 0, Origin::from_raw)?,
                    path: r.get(1)?,
                    count: r.get::<_, i64>(2)? as u64,
                    first_seen: from_unix_ns(r.get(3)?),
                    last_seen: from_unix_ns(r.get(4)?),
                    program: r.get(5)?,
                    found: serde_json::from_str(&found).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Text, Box::new(e))
                    })?,
                })
            })
            .map_err(fail)?;
        rows.collect::<Result<_, _>>().map_err(fail)
    }

    /// The syscalls a container's processes made, over every run and cgroup: (origin, made under
    /// a seccomp filter, syscall number).
    pub fn calls(&self, container_id: &str) -> Result<Vec<CallEvidence>, Error> {
        let fail = |e| corrupt(&self.path, e);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT DISTINCT c.origin, c.filtered, c.syscall
                 FROM calls c JOIN cgroups g ON g.run_id = c.run_id AND g.cgroup_id = c.cgroup_id
                 WHERE g.container_id = ?1
                 ORDER BY c.origin, c.filtered, c.syscall",
            )
            .map_err(fail)?;
        let rows = stmt
            .query_map([container_id], |r| {
                Ok(CallEvidence {
                    origin: decode(r, 0, Origin::from_raw)?,
                    filtered: r.get::<_, i64>(1)? != 0,
                    syscall: r.get(2)?,
                })
            })
            .map_err(fail)?;
        rows.collect::<Result<_, _>>().map_err(fail)
    }

    /// What the kernel side could not deliver between two times, by kind.
    pub fn losses_between(&self, from: SystemTime, to: SystemTime) -> Result<Vec<(Loss, u64)>, Error> {
        let fail = |e| corrupt(&self.path, e);
        let mut stmt = self
            .conn
            .prepare("SELECT loss, SUM(added) FROM losses WHERE at_ns BETWEEN ?1 AND ?2 GROUP BY loss ORDER BY loss")
            .map_err(fail)?;
        let rows = stmt
            .query_map(params![unix_ns(from), unix_ns(to)], |r| {
                Ok((decode(r, 0, Loss::from_raw)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(fail)?;
        rows.collect::<Result<_, _>>().map_err(fail)
    }

    /// Every (capability, syscall) pair the kernel was seen checking, in any container.
    pub fn kernel_checks(&self) -> Result<BTreeSet<(u32, u32)>, Error> {
        let fail = |e| corrupt(&self.path, e);
        let mut stmt = self.conn.prepare("SELECT DISTINCT cap, syscall FROM cap_checks").map_err(fail)?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(fail)?;
        rows.collect::<Result<_, _>>().map_err(fail)
    }

    /// How many checks and failures each container has, by container id.
    pub fn counts(&self) -> Result<HashMap<String, (u64, u64)>, Error> {
        let fail = |e| corrupt(&self.path, e);
        let mut counts = HashMap::new();
        for (table, column) in [("cap_checks", 0), ("failures", 1)] {
            let sql = format!(
                "SELECT g.container_id, SUM(t.count) FROM {table} t JOIN cgroups g ON g.run_id = t.run_id AND g.cgroup_id = t.cgroup_id
                 WHERE g.container_id IS NOT NULL GROUP BY g.container_id"
            );
            let mut stmt = self.conn.prepare(&sql).map_err(fail)?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))).map_err(fail)?;
            for row in rows {
                let (id, n) = row.map_err(fail)?;
                let entry: &mut (u64, u64) = counts.entry(id).or_default();
                if column == 0 {
                    entry.0 = n;
                } else {
                    entry.1 = n;
                }
            }
        }
        Ok(counts)
    }

    /// Removes containers that exited more than `age` ago, with everything recorded about them.
    pub fn forget_exited_before(&mut self, age: Duration) -> Result<usize, Error> {
        let cutoff = SystemTime::now().checked_sub(age).unwrap_or(UNIX_EPOCH);
        let old: Vec<String> = self
            .containers()?
            .into_iter()
            .filter(|c| {
                c.exited_at.as_deref().and_then(|t| humantime::parse_rfc3339_weak(t).ok()).is_some_and(|t| t < cutoff)
            })
            .map(|c| c.id)
            .collect();
        let path = self.path.clone();
        let fail = |e| corrupt(&path, e);
        let tx = self.conn.transaction().map_err(fail)?;
        for id in &old {
            for table in ["cap_checks", "failures", "execs", "calls"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE (run_id, cgroup_id) IN (SELECT run_id, cgroup_id FROM cgroups WHERE container_id = ?1)"),
                    [id],
                )
                .map_err(fail)?;
            }
            tx.execute("DELETE FROM cgroups WHERE container_id = ?1", [id]).map_err(fail)?;
            tx.execute("DELETE FROM verifications WHERE container_id = ?1", [id]).map_err(fail)?;
            tx.execute("DELETE FROM containers WHERE id = ?1", [id]).map_err(fail)?;
        }
        tx.commit().map_err(fail)?;
        Ok(old.len())
    }

    /// The host's bounding set as the newest run that knew it saw it.
    pub fn host_bounding(&self) -> Result<Option<u64>, Error> {
        self.conn
            .query_row("SELECT cap_bnd FROM runs WHERE cap_bnd IS NOT NULL ORDER BY run_id DESC LIMIT 1", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map(|b| b.map(|b| b as u64))
            .map_err(|e| corrupt(&self.path, e))
    }

    /// The backend of the newest run, if any.
    pub fn last_backend(&self) -> Result<Option<String>, Error> {
        self.conn
            .query_row("SELECT backend FROM runs ORDER BY run_id DESC LIMIT 1", [], |r| r.get(0))
            .optional()
            .map_err(|e| corrupt(&self.path, e))
    }

    /// Keeps a verification beside the daemon's records (`capwatch verify` runs while the daemon
    /// writes: one more writer for a row, never the daemon's lock).
    pub fn record_verification(state_dir: &Path, verification: &Verification) -> Result<(), Error> {
        let store = Self::open_read_only(state_dir)?;
        let conn = Connection::open_with_flags(&store.path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(|e| corrupt(&store.path, e))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(|e| corrupt(&store.path, e))?;
        let json = serde_json::to_string(verification).expect("verifications serialize");
        conn.execute(
            "INSERT INTO verifications (container_id, at_ns, json) VALUES (?1, ?2, ?3)",
            params![verification.container_id, unix_ns(SystemTime::now()), json],
        )
        .map_err(|e| corrupt(&store.path, e))?;
        Ok(())
    }

    /// The container's latest verification, if it had one.
    pub fn latest_verification(&self, container_id: &str) -> Result<Option<Verification>, Error> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT json FROM verifications WHERE container_id = ?1 ORDER BY at_ns DESC LIMIT 1",
                [container_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| corrupt(&self.path, e))?;
        json.map(|json| {
            serde_json::from_str(&json).map_err(|e| Error::CorruptStore {
                path: self.path.clone(),
                reason: format!("a verification record: {e}"),
            })
        })
        .transpose()
    }
}

fn sample(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Sample> {
    let comm: String = r.get(at + 4)?;
    let mut raw = [0u8; capwatch_common::COMM_LEN];
    let n = comm.len().min(raw.len());
    raw[..n].copy_from_slice(&comm.as_bytes()[..n]);
    Ok(Sample { tid: r.get(at)?, pid: r.get(at + 1)?, uid: r.get(at + 2)?, gid: r.get(at + 3)?, comm: raw })
}

/// A stored number as the enum it stands for; one this build does not know is a corrupt row.
fn decode<T, R: rusqlite::types::FromSql + std::fmt::Display + Copy>(
    r: &rusqlite::Row<'_>,
    at: usize,
    from_raw: fn(R) -> Option<T>,
) -> rusqlite::Result<T> {
    let raw: R = r.get(at)?;
    from_raw(raw).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            at,
            rusqlite::types::Type::Integer,
            format!("unknown value {raw}").into(),
        )
    })
}

/// What an SQLite error says of the store: the disk or the file refusing for now (full, read-only,
/// unopenable, busy), which passes, or a store that cannot be read, which does not.
fn corrupt(path: &Path, e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode::{CannotOpen, DatabaseBusy, DatabaseLocked, DiskFull, ReadOnly, SystemIoFailure};
    let reason = e.to_string();
    match e.sqlite_error_code() {
        Some(DiskFull | ReadOnly | CannotOpen | SystemIoFailure | DatabaseBusy | DatabaseLocked) => {
            Error::StoreUnavailable { path: path.to_path_buf(), reason }
        }
        _ => Error::CorruptStore { path: path.to_path_buf(), reason },
    }
}

/// Whether `dir` lies on a filesystem mounted read-only.
fn on_read_only_filesystem(dir: &Path) -> bool {
    let Ok(c_dir) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else { return false };
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and a buffer of the right type, read only on success.
    if unsafe { libc::statvfs(c_dir.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: statvfs succeeded and filled it.
    unsafe { stat.assume_init() }.f_flag & libc::ST_RDONLY != 0
}

/// Takes the writer's lock of `state_dir`, or says which daemon holds it.
fn lock(state_dir: &Path) -> Result<File, Error> {
    let path = state_dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| unavailable(&path, e))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        let pid = pid.trim();
        return Err(Error::StoreInUse {
            state_dir: state_dir.to_path_buf(),
            pid: if pid.is_empty() { "unknown".into() } else { pid.into() },
        });
    }
    file.set_len(0)
        .and_then(|()| file.write_all(std::process::id().to_string().as_bytes()))
        .map_err(|e| unavailable(&path, e))?;
    Ok(file)
}

/// A file of the store that a full or read-only filesystem, or its permissions, keep from being
/// written: the store is unavailable, not broken.
fn unavailable(path: &Path, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::EROFS | libc::ENOSPC | libc::EDQUOT | libc::EACCES | libc::EPERM | libc::EIO) => {
            Error::StoreUnavailable { path: path.to_path_buf(), reason: e.to_string() }
        }
        _ => Error::io(path, e),
    }
}

/// A kernel monotonic timestamp as Unix nanoseconds.
fn wall_ns(monotonic_ns: u64) -> i64 {
    unix_ns(clock::wall(monotonic_ns))
}

fn unix_ns(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

fn from_unix_ns(ns: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use capwatch_common::Totals;

    use super::*;
    use crate::{
        attribution::{Observed, Place},
        containers::Runtime,
    };

    fn container(id: &str, name: &str, exited_at: Option<&str>) -> Container {
        Container {
            id: id.into(),
            name: name.into(),
            image: Some("img".into()),
            runtime: Runtime::Docker,
            pod_uid: None,
            cgroup: format!("/docker/{id}"),
            init_pid: Some(42),
            created_at: None,
            started_at: Some("2026-11-23T00:00:00Z".into()),
            exited_at: exited_at.map(Into::into),
            granted: None,
            layers: Vec::new(),
        }
    }

    fn totals(count: u64) -> Totals {
        Totals {
            count,
            first_ns: clock::monotonic_now_ns(),
            last_ns: clock::monotonic_now_ns(),
            stack_id: -1,
            judged: 0,
            sample: Sample { tid: 7, pid: 7, uid: 0, gid: 0, comm: *b"web\0\0\0\0\0\0\0\0\0\0\0\0\0" },
        }
    }

    fn tempdir(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("capwatch-store-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn check(key: CapKey, count: u64) -> Check {
        let place = Place { cgroup_id: key.cgroup_id, cgroup: "/docker/x".into(), container: None };
        Observed { key, totals: totals(count), added: count, first: false, place, detail: None }
    }

    #[test]
    fn runs_add_up_and_rewrites_are_idempotent() {
        let dir = tempdir("runs");
        let web = Arc::new(container("a".repeat(64).as_str(), "web", None));
        let key =
            CapKey { cgroup_id: 100, cap: 13, syscall: 41, verdict: Verdict::Granted, origin: Origin::App, flags: 0 };
        let mut store = Store::open(&dir).unwrap();
        for (cgroup_id, counts) in [(100, [3, 5]), (200, [4, 4])] {
            let run = store.begin_run("tracepoint", None).unwrap();
            for n in counts {
                let key = CapKey { cgroup_id, ..key };
                let cgroups = [CgroupRow { cgroup_id, path: &web.cgroup, container_id: Some(&web.id) }];
                let check = check(key, n);
                let batch = Batch {
                    cgroups: &cgroups,
                    containers: &[Arc::clone(&web)],
                    checks: &[&check],
                    failures: &[],
                    execs: &[],
                    calls: &[],
                    losses: &[],
                };
                store.write(run, &batch).unwrap();
            }
        }
        drop(store);
        let store = Store::open_read_only(&dir).unwrap();
        let rows = store.cap_checks(&web.id).unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].count, 5 + 4);
        assert_eq!(crate::names::comm(&rows[0].sample.comm), "web");
        assert_eq!(store.containers().unwrap(), vec![Container::clone(&web)]);
        assert_eq!(store.counts().unwrap()[&web.id], (9, 0));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn retention_forgets_only_long_exited_containers() {
        let dir = tempdir("retention");
        let mut store = Store::open(&dir).unwrap();
        let run = store.begin_run("tracepoint", None).unwrap();
        let old = Arc::new(container(&"b".repeat(64), "old", Some("2020-01-01T00:00:00Z")));
        let live = Arc::new(container(&"c".repeat(64), "live", None));
        store
            .write(
                run,
                &Batch {
                    cgroups: &[],
                    containers: &[old, live],
                    checks: &[],
                    failures: &[],
                    execs: &[],
                    calls: &[],
                    losses: &[],
                },
            )
            .unwrap();
        assert_eq!(store.forget_exited_before(Duration::from_secs(86400)).unwrap(), 1);
        assert_eq!(store.containers().unwrap().iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["live"]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_containers_latest_verification_is_kept_while_the_daemon_writes_and_forgotten_with_it() {
        let dir = tempdir("verifications");
        let mut store = Store::open(&dir).unwrap();
        let run = store.begin_run("tracepoint", None).unwrap();
        let old = Arc::new(container(&"b".repeat(64), "old", Some("2020-01-01T00:00:00Z")));
        let batch =
            Batch { cgroups: &[], containers: &[old], checks: &[], failures: &[], execs: &[], calls: &[], losses: &[] };
        store.write(run, &batch).unwrap();
        let verification = |summary: &str| Verification {
            container_id: "b".repeat(64),
            container_name: "old".into(),
            at: "2026-11-30T18:00:00.000Z".into(),
            capabilities: vec!["CHOWN".into()],
            verdict: crate::verification::Outcome::ProvenMinimal,
            summary: summary.into(),
            can_go: vec![],
            trials: vec![],
        };
        // Written beside the daemon's open, locked store.
        Store::record_verification(&dir, &verification("first")).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        Store::record_verification(&dir, &verification("second")).unwrap();
        let latest = Store::open_read_only(&dir).unwrap().latest_verification(&"b".repeat(64)).unwrap();
        assert_eq!(latest.map(|v| v.summary).as_deref(), Some("second"));
        store.forget_exited_before(Duration::from_secs(86400)).unwrap();
        assert!(store.latest_verification(&"b".repeat(64)).unwrap().is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_corrupt_store_is_refused_and_left_as_it_was() {
        let dir = tempdir("corrupt");
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = b"this is not a database, and it must survive being opened".repeat(100);
        std::fs::write(dir.join(FILE), &garbage).unwrap();
        for result in [Store::open(&dir).map(drop), Store::open_read_only(&dir).map(drop)] {
            let err = result.expect_err("a corrupt store must be refused");
            assert!(matches!(err, Error::CorruptStore { .. }), "{err}");
            assert_eq!(err.to_string().lines().count(), 1);
        }
        assert_eq!(std::fs::read(dir.join(FILE)).unwrap(), garbage, "nothing may be destroyed");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_schema_1_store_is_migrated_and_keeps_its_failures() {
        let dir = tempdir("migrate");
        std::fs::create_dir_all(&dir).unwrap();
        let id = "d".repeat(64);
        {
            let conn = Connection::open(dir.join(FILE)).unwrap();
            conn.execute_batch(&format!(
                "CREATE TABLE runs (run_id INTEGER PRIMARY KEY AUTOINCREMENT, started_ns INTEGER NOT NULL,
                     backend TEXT NOT NULL);
                 CREATE TABLE cap_checks (run_id INTEGER NOT NULL, cgroup_id INTEGER NOT NULL, cap INTEGER NOT NULL,
                     syscall INTEGER NOT NULL, verdict INTEGER NOT NULL, origin INTEGER NOT NULL, flags INTEGER NOT NULL,
                     count INTEGER NOT NULL, first_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL, tid INTEGER NOT NULL,
                     pid INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL, comm TEXT NOT NULL, call_site TEXT,
                     PRIMARY KEY (run_id, cgroup_id, cap, syscall, verdict, origin, flags));
                 CREATE TABLE cgroups (run_id INTEGER NOT NULL, cgroup_id INTEGER NOT NULL, path TEXT NOT NULL,
                     container_id TEXT, PRIMARY KEY (run_id, cgroup_id));
                 CREATE TABLE failures (run_id INTEGER NOT NULL, cgroup_id INTEGER NOT NULL, syscall INTEGER NOT NULL,
                     errno INTEGER NOT NULL, origin INTEGER NOT NULL, count INTEGER NOT NULL, first_ns INTEGER NOT NULL,
                     last_ns INTEGER NOT NULL, tid INTEGER NOT NULL, pid INTEGER NOT NULL, uid INTEGER NOT NULL,
                     gid INTEGER NOT NULL, comm TEXT NOT NULL,
                     PRIMARY KEY (run_id, cgroup_id, syscall, errno, origin));
                 INSERT INTO cgroups VALUES (1, 100, '/docker/{id}', '{id}');
                 INSERT INTO failures VALUES (1, 100, 41, 1, 0, 7, 1, 2, 5, 5, 1000, 1000, 'ping');
                 PRAGMA user_version = 1;"
            ))
            .unwrap();
        }
        drop(Store::open(&dir).expect("a schema-1 store opens for writing"));
        let store = Store::open_read_only(&dir).expect("and reads after its migration");
        let failures = store.failures(&id).unwrap();
        assert_eq!(failures.len(), 1, "{failures:?}");
        let f = &failures[0];
        assert_eq!((f.key.syscall, f.key.uid, f.key.seccomp, f.count), (41, 1000, Seccomp::Unknown, 7));
        assert_eq!(f.explained, None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn one_writer_at_a_time() {
        let dir = tempdir("lock");
        let first = Store::open(&dir).expect("the first writer");
        let err = Store::open(&dir).map(drop).expect_err("a second writer");
        assert!(matches!(&err, Error::StoreInUse { pid, .. } if *pid == std::process::id().to_string()), "{err}");
        assert!(Store::open_read_only(&dir).is_ok(), "readers are never locked out");
        drop(first);
        assert!(Store::open(&dir).is_ok(), "the lock goes with its writer");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn reading_without_a_store_says_where_it_looked() {
        let dir = tempdir("missing");
        let err = Store::open_read_only(&dir).map(drop).expect_err("no store");
        assert!(err.to_string().contains(&dir.display().to_string()), "{err}");
    }
}
