//! `capwatch ps`'s table.

use comfy_table::{presets::NOTHING, Table};

use crate::query::Listed;

pub fn table(containers: &[Listed]) -> String {
    let mut table = Table::new();
    table.load_preset(NOTHING).set_header(["CONTAINER ID", "NAME", "IMAGE", "RUNTIME", "STATE", "CHECKS", "FAILURES"]);
    for Listed { container, checks, failures } in containers {
        let state = match &container.exited_at {
            None => "running".to_string(),
            Some(at) => format!("exited {at}"),
        };
        table.add_row([
            container.short_id().to_string(),
            container.name.clone(),
            container.image.clone().unwrap_or_default(),
            container.runtime.to_string(),
            state,
            checks.to_string(),
            failures.to_string(),
        ]);
    }
    format!("{table}\n")
}
