//! `capwatch whatif <container> --cap-add … [--cap-drop …]`: what would have failed under that
//! set, answered from the store alone.

use crate::{cli::StateDir, error::Error, format, query};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A container's name, full id or unique id prefix.
    pub container: String,
    /// Capabilities the set holds, comma-separated (NET_RAW,CHOWN); alone, `--cap-drop ALL` is implied.
    #[arg(long = "cap-add", value_delimiter = ',')]
    pub cap_add: Vec<String>,
    /// Capabilities taken from what the container holds now, comma-separated, or ALL.
    #[arg(long = "cap-drop", value_delimiter = ',')]
    pub cap_drop: Vec<String>,
    /// table (for people) or json (see docs/report-format.md).
    #[arg(long, value_enum, default_value_t = format::TableOrJson::Table)]
    pub format: format::TableOrJson,
    #[command(flatten)]
    pub state_dir: StateDir,
}

pub fn run(args: Args) -> Result<(), Error> {
    let answer = query::whatif(&args.state_dir.path, &args.container, &args.cap_add, &args.cap_drop)?;
    super::print(&format::whatif::render(&answer, args.format));
    match answer.breaks {
        true => Err(Error::WouldFail(answer.operations.len() + answer.execs.len())),
        false => Ok(()),
    }
}
