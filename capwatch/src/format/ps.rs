//! `capwatch ps`'s table.

use comfy_table::presets::NOTHING;

use super::layout;
use crate::{
    containers::{Container, State},
    query::Listed,
};

pub fn table(containers: &[Listed]) -> String {
    let mut table = layout::table(["CONTAINER ID", "NAME", "IMAGE", "RUNTIME", "STATE", "CHECKS", "FAILURES"]);
    table.load_preset(NOTHING);
    for Listed { container, checks, failures } in containers {
        table.add_row([
            container.short_id().to_string(),
            container.name.clone(),
            container.image.clone().unwrap_or_default(),
            container.runtime.to_string(),
            state(container),
            checks.to_string(),
            failures.to_string(),
        ]);
    }
    format!("{table}\n")
}

/// `running`, `exited <when>`, or `created, failed to start`.
pub fn state(container: &Container) -> String {
    match container.state() {
        State::Running => "running".to_string(),
        State::Exited(at) => format!("exited {at}"),
        State::FailedToStart => "created, failed to start".to_string(),
    }
}
