//! `capwatch explain <container>`: why each of its syscalls failed with EPERM or EACCES.

use crate::{
    cli::StateDir,
    error::Error,
    format::{self, TableOrJson as Format},
    query,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A container's name, full id or unique id prefix.
    pub container: String,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Show the runtime's setup and `docker exec` sessions row by row, not in a line each.
    #[arg(short, long)]
    pub all: bool,
    #[command(flatten)]
    pub state_dir: StateDir,
}

pub fn run(args: Args) -> Result<(), Error> {
    let (container, explanations) = query::explanations(&args.state_dir.path, &args.container)?;
    match args.format {
        Format::Json => super::print(&serde_json::to_string_pretty(&explanations).expect("explanations serialize")),
        Format::Table => {
            super::print(&format::explain::table(&container, &explanations, args.all));
            super::print_warnings(&args.state_dir.path);
        }
    }
    Ok(())
}
