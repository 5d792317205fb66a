//! `capwatch caps decode <mask>` and `capwatch caps <container>`.

use std::path::PathBuf;

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};

use crate::{advice::Verdict, cli::report, error::Error, names, paths};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Show a container's granted capabilities beside those it used.
    pub container: Option<String>,
    /// The daemon's state directory.
    #[arg(long, env = "CAPWATCH_STATE_DIR", default_value = paths::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
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
        (Some(Command::Decode { mask }), _) => {
            for bit in names::mask_bits(parse_mask(&mask)?) {
                println!("{} ({bit})", names::capability(bit));
            }
            Ok(())
        }
        (None, Some(container)) => side_by_side(&args.state_dir, &container),
        (None, None) => Err(Error::Usage("name a container, or `capwatch caps decode <mask>`".into())),
    }
}

pub fn parse_mask(text: &str) -> Result<u64, Error> {
    let digits = text.trim().trim_start_matches("0x");
    if digits.is_empty() || digits.len() > 16 {
        return Err(Error::Usage(format!("{text:?} is not a capability mask: give up to 16 hex digits, such as 0000001dbdbeffff")));
    }
    u64::from_str_radix(digits, 16)
        .map_err(|_| Error::Usage(format!("{text:?} is not a capability mask: give up to 16 hex digits, such as 0000001dbdbeffff")))
}

fn side_by_side(state_dir: &std::path::Path, query: &str) -> Result<(), Error> {
    let report = report::load(state_dir, query)?;
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY).set_header(["capability", "granted", "used by the application"]);
    for cap in &report.capabilities {
        table.add_row([
            cap.capability.as_str(),
            match cap.granted {
                Some(true) => "yes",
                Some(false) => "no",
                None => "?",
            },
            match cap.verdict {
                Verdict::Needed => "yes",
                Verdict::Missing => "denied, and needed",
                Verdict::NotNeeded => "",
            },
        ]);
    }
    println!("{} ({})\n{table}", report.container.name, report.container.short_id());
    Ok(())
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
