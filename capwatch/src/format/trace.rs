//! `capwatch trace`'s lines: one per new observation, and the totals table at the end.

use crate::{attribution::Observation, journal::noaudit, names};

/// One line per first occurrence and loss, stamped with the seconds since tracing began.
pub fn lines(observations: &[Observation], at: f64) -> String {
    let mut out = String::new();
    for observation in observations {
        let line = match observation {
            Observation::Check(c) if c.first => format!(
                "{at:8.3}s  {}  {} {} in {}  by {} (pid {}, uid {}, {})",
                c.place.cgroup,
                names::capability(c.key.cap),
                names::verdict(&c.key),
                names::syscall(c.key.syscall),
                names::comm(&c.totals.sample.comm),
                c.totals.sample.pid,
                c.totals.sample.uid,
                c.key.origin.name(),
            ),
            Observation::Failure(f) if f.first => format!(
                "{at:8.3}s  {}  {} failed with {}  by {} (pid {}, uid {}, {})",
                f.place.cgroup,
                names::syscall(f.key.syscall),
                names::errno(f.key.errno),
                names::comm(&f.totals.sample.comm),
                f.totals.sample.pid,
                f.totals.sample.uid,
                f.key.origin.name(),
            ),
            Observation::Exec(e) if e.first => match &e.detail.found {
                crate::filecaps::Found::Caps(caps) => format!(
                    "{at:8.3}s  {}  exec {} carrying {}  by {} (pid {}, {})",
                    e.place.cgroup,
                    e.detail.path,
                    crate::filecaps::describe(caps),
                    names::comm(&e.totals.sample.comm),
                    e.totals.sample.pid,
                    e.key.origin.name(),
                ),
                _ => continue,
            },
            Observation::Lost { loss, total, added } => {
                format!("{at:8.3}s  lost: {added} more {} ({total} in all)", loss.name())
            }
            _ => continue,
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Every aggregate's count, and what was lost.
pub fn totals(observations: &[Observation], losses: &[u64]) -> String {
    let mut table = super::layout::table(["cgroup", "observed", "in syscall", "by", "noaudit", "count"]);
    for observation in observations {
        match observation {
            Observation::Check(c) => table.add_row([
                c.place.cgroup.to_string(),
                format!("{} {}", names::capability(c.key.cap), names::verdict(&c.key)),
                names::syscall(c.key.syscall).into_owned(),
                c.key.origin.name().to_string(),
                noaudit(c.key.flags).to_string(),
                c.totals.count.to_string(),
            ]),
            Observation::Failure(f) => table.add_row([
                f.place.cgroup.to_string(),
                format!("failed with {}", names::errno(f.key.errno)),
                names::syscall(f.key.syscall).into_owned(),
                f.key.origin.name().to_string(),
                String::new(),
                f.totals.count.to_string(),
            ]),
            Observation::Exec(_) | Observation::Calls(_) | Observation::Lost { .. } => continue,
        };
    }
    let lost: Vec<String> = capwatch_common::Loss::ALL
        .iter()
        .filter_map(|&loss| losses.get(loss.raw() as usize).filter(|&&n| n > 0).map(|n| format!("{} {n}", loss.name())))
        .collect();
    format!("{table}\nlost: {}\n", if lost.is_empty() { "nothing".to_string() } else { lost.join(", ") })
}
