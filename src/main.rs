//! The `foley` binary: parses the command line and reports errors as one line on stderr.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = foley::cli::Cli::parse();
    match foley::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
