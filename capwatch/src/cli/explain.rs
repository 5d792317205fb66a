//! `capwatch explain <container>`: why each of its syscalls failed with EPERM or EACCES.

use std::path::PathBuf;

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};

use crate::{cli::report::open_container, error::Error, explain, paths};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A container's name, full id or unique id prefix.
    pub container: String,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// The daemon's state directory.
    #[arg(long, env = "CAPWATCH_STATE_DIR", default_value = paths::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

pub fn run(args: Args) -> Result<(), Error> {
    let (store, container) = open_container(&args.state_dir, &args.container)?;
    let explanations = explain::explain(&container, &store.failures(&container.id)?, &store.kernel_checks()?);
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&explanations).expect("explanations serialize")),
        Format::Table => {
            println!("{} ({}): {} failing syscall(s)", container.name, container.short_id(), explanations.len());
            let mut table = Table::new();
            table.load_preset(UTF8_BORDERS_ONLY).set_header(["syscall", "errno", "count", "program", "uid", "cause", "why"]);
            for e in &explanations {
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
            println!("{table}");
        }
    }
    Ok(())
}
