use std::process::ExitCode;

use capwatch::cli::{self, Cli, Command};
use clap::Parser;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage(e),
    };
    if let Command::SelftestChild = cli.command {
        // A short, single-threaded child: no runtime, no logging.
        return capwatch::selftest::child();
    }
    if !matches!(cli.command, Command::Daemon(_) | Command::Run(_)) {
        // An answer piped into `head` ends quietly when the reader has had enough, as other
        // command-line tools do, rather than failing on the closed pipe.
        // SAFETY: setting a signal's disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    init_logging(&cli.command);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&e),
    };
    let result = runtime.block_on(async {
        let done = |result: Result<(), capwatch::error::Error>| result.map(|()| ExitCode::SUCCESS);
        match cli.command {
            Command::Run(args) => cli::run::run(args).await,
            Command::Daemon(args) => done(cli::daemon::run(args).await),
            Command::Trace(args) => done(cli::trace::run(args).await),
            Command::Status(args) => done(cli::status::run(args)),
            Command::Ps(args) => done(cli::ps::run(args)),
            Command::Config(args) => done(cli::config::run(args)),
            Command::Report(args) => done(cli::report::run(args)),
            Command::Caps(args) => done(cli::caps::run(args)),
            Command::Explain(args) => done(cli::explain::run(args)),
            Command::Whatif(args) => done(cli::whatif::run(args)),
            Command::Verify(args) => done(cli::verify::run(args).await),
            Command::SelftestChild => Ok(ExitCode::SUCCESS),
        }
    });
    result.unwrap_or_else(|e| fail(&e))
}

fn fail(err: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("capwatch: {err}");
    ExitCode::FAILURE
}

/// Help and version as clap prints them; a usage error in one line, pointing at the help.
fn usage(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind::{DisplayHelp, DisplayHelpOnMissingArgumentOrSubcommand, DisplayVersion};
    if matches!(err.kind(), DisplayHelp | DisplayVersion | DisplayHelpOnMissingArgumentOrSubcommand) {
        let _ = err.print();
        return if err.kind() == DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let text = err.render().to_string();
    // clap lists what is missing on the lines after "…were not provided:": one line holds both.
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut first = capwatch::names::shown(lines.next().unwrap_or("bad arguments").trim_start_matches("error: "));
    if first.ends_with(':') {
        first = format!("{first} {}", capwatch::names::shown(lines.next().unwrap_or_default()));
    }
    eprintln!("capwatch: {first} (capwatch --help tells the usage)");
    ExitCode::from(2)
}

/// People get plain text on stderr, filtered by `RUST_LOG`. The daemon installs its own JSON
/// lines once its settings say where they go (service/logs.rs).
fn init_logging(command: &Command) {
    use tracing_subscriber::{fmt, EnvFilter};
    if matches!(command, Command::Daemon(_)) {
        return;
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
