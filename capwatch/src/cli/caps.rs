//! `capwatch caps decode <mask>` and `capwatch caps <container>`.

use crate::{cli::StateDir, error::Error, format, query};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Show a container's granted capabilities beside those it used.
    pub container: Option<String>,
    #[command(flatten)]
    pub state_dir: StateDir,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Name the capabilities in a mask from /proc/<pid>/status (CapEff, CapPrm, CapBnd, …).
    Decode {
        /// Hexadecimal, as /proc prints it: 0000001dbdbeffff.
        mask: String,
    },
}

pub fn run(args: Args) -> Result<(), Error> {
    match (args.command, args.container) {
        (Some(Command::Decode { mask }), _) => print!("{}", format::caps::decoded(parse_mask(&mask)?)),
        (None, Some(container)) => {
            super::print(&format::caps::side_by_side(&query::report(&args.state_dir.path, &container)?));
            super::print_warnings(&args.state_dir.path);
        }
        (None, None) => return Err(Error::Usage("name a container, or `capwatch caps decode <mask>`".into())),
    }
    Ok(())
}

fn parse_mask(text: &str) -> Result<u64, Error> {
    let bad = || {
        let shown = crate::names::shown(text);
        Error::Usage(format!(
            "\"{shown}\" is not a capability mask: give up to 16 hex digits, such as 0000001dbdbeffff"
        ))
    };
    let digits = text.trim().trim_start_matches("0x");
    if digits.is_empty() || digits.len() > 16 {
        return Err(bad());
    }
    u64::from_str_radix(digits, 16).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_parse_as_proc_prints_them() {
        assert_eq!(parse_mask("0000001dbdbeffff").unwrap(), 0x1dbdbeffff);
        assert_eq!(parse_mask("0x3").unwrap(), 3);
        for bad in ["", "xyz", "00000000000000000", "-1"] {
            let err = parse_mask(bad).expect_err(bad).to_string();
            assert!(err.contains("not a capability mask"), "{err}");
        }
    }
}
