//! `capwatch whatif`: what would fail under a capability set, as a table or JSON.

use super::{layout, TableOrJson as Format};
use crate::advice::whatif::WhatIf;

pub fn render(answer: &WhatIf, format: Format) -> String {
    match format {
        Format::Table => table(answer),
        Format::Json => serde_json::to_string_pretty(answer).expect("what-if answers serialize"),
    }
}

fn table(answer: &WhatIf) -> String {
    let c = &answer.container;
    let set = super::docker(&answer.capabilities);
    let mut out = format!("container {} ({}) under {set}\n", c.name, c.short_id());
    if !answer.breaks {
        out.push_str("nothing observed would have failed\n");
        return out;
    }
    if !answer.operations.is_empty() {
        let mut table = layout::table(["lacking", "syscalls", "programs", "times", "why it is needed"]);
        for op in &answer.operations {
            table.add_row([
                op.capability.clone(),
                op.syscall.clone().unwrap_or_default(),
                op.programs.join(","),
                op.count.to_string(),
                op.why.clone(),
            ]);
        }
        out.push_str(&format!("these operations would have failed:\n{table}\n"));
    }
    if !answer.execs.is_empty() {
        let mut table = layout::table(["program", "file capabilities", "lacking", "times"]);
        for exec in &answer.execs {
            table.add_row([
                exec.path.clone(),
                exec.file_capabilities.clone(),
                exec.lacking.join(","),
                exec.count.to_string(),
            ]);
        }
        out.push_str(&format!(
            "these execs would have failed with EPERM (file capabilities outside the set):\n{table}\n"
        ));
    }
    out
}
