//! `capwatch explain`'s answer for people: the application's failures with why and what to do,
//! then the runtime's setup and `docker exec` sessions in a line each (rows with `--all`).

use comfy_table::{Cell, Color};

use super::layout;
use crate::{cause::Cause, containers::Container, explain::Explanation};

pub fn table(container: &Container, explanations: &[Explanation], all: bool) -> String {
    let (app, others): (Vec<&Explanation>, Vec<&Explanation>) = explanations.iter().partition(|e| e.application());
    let mut out = format!("{} ({}): ", container.name, container.short_id());
    out.push_str(&match app.len() {
        0 => "no failing syscall in the application\n".to_string(),
        n => format!("{n} failing syscall{} in the application\n", if n == 1 { "" } else { "s" }),
    });
    let shown: Vec<&Explanation> = if all { explanations.iter().collect() } else { app };
    if !shown.is_empty() {
        let mut table = layout::table(["syscall", "errno", "count", "program", "by", "why", "fix"]);
        for e in shown {
            table.add_row([
                Cell::new(&e.syscall),
                Cell::new(&e.errno),
                Cell::new(e.count),
                Cell::new(&e.program),
                Cell::new(format!(
                    "uid {}{}",
                    e.uid,
                    if e.application() { String::new() } else { format!(", {}", e.origin) }
                )),
                layout::coloured(&e.text, cause_colour(&e.cause)),
                Cell::new(&e.fix),
            ]);
        }
        out.push_str(&format!("{table}\n"));
    }
    for (origin, what) in [("runtime", "the runtime's setup"), ("exec", "docker exec sessions")] {
        let rows: Vec<&Explanation> = others.iter().filter(|e| e.origin == origin).copied().collect();
        if rows.is_empty() {
            continue;
        }
        let calls: Vec<String> = rows.iter().map(|e| format!("{} {} ×{}", e.syscall, e.errno, e.count)).collect();
        let (count, plural) = (calls.len(), if calls.len() == 1 { "" } else { "s" });
        let shown = if all { "" } else { "; --all shows them" };
        let line = format!("{what}: {count} failing syscall{plural} ({}){shown}", calls.join(", "));
        out.push_str(&layout::paragraph(&line, "  "));
    }
    out
}

fn cause_colour(cause: &Cause) -> Option<Color> {
    match cause {
        Cause::Capability { .. } => Some(Color::Red),
        Cause::Seccomp { .. } => Some(Color::Magenta),
        Cause::FilePermissions { .. } => Some(Color::Yellow),
        Cause::FileCapabilities | Cause::KeptCapabilities => Some(Color::Cyan),
        Cause::Other => None,
    }
}
