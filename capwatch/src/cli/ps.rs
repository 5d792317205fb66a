//! `capwatch ps`: the containers capwatch has seen, from the store.

use std::path::PathBuf;

use comfy_table::{presets::NOTHING, Table};

use crate::{error::Error, paths, store::Store};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show exited containers too.
    #[arg(short, long)]
    pub all: bool,
    /// The daemon's state directory.
    #[arg(long, env = "CAPWATCH_STATE_DIR", default_value = paths::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

pub fn run(args: Args) -> Result<(), Error> {
    let store = Store::open_read_only(&args.state_dir)?;
    let counts = store.counts()?;
    let mut table = Table::new();
    table.load_preset(NOTHING).set_header(["CONTAINER ID", "NAME", "IMAGE", "RUNTIME", "STATE", "CHECKS", "FAILURES"]);
    for container in store.containers()?.iter().filter(|c| args.all || c.running()) {
        let (checks, failures) = counts.get(&container.id).copied().unwrap_or_default();
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
    println!("{table}");
    Ok(())
}
