//! `capwatch explain`'s table.

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};

use crate::{containers::Container, explain::Explanation};

pub fn table(container: &Container, explanations: &[Explanation]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY).set_header(["syscall", "errno", "count", "program", "uid", "cause", "why"]);
    for e in explanations {
        table.add_row([
            e.syscall.clone(),
            e.errno.clone(),
            e.count.to_string(),
            e.program.clone(),
            e.uid.to_string(),
            e.cause.kind().replace('_', " "),
            e.text.clone(),
        ]);
    }
    format!("{} ({}): {} failing syscall(s)\n{table}\n", container.name, container.short_id(), explanations.len())
}
