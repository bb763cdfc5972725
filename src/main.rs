//! The `foley` binary: parses the command line and reports errors as one line on stderr.

use clap::Parser;

/// Large tensors come and go every op; mimalloc reuses their pages where the system allocator
/// returned them to the kernel, which then zeroed fresh ones (11 % of a CPU generation).
/// `MappedAware` lets weights stay in their memory-mapped files instead of being copied.
#[global_allocator]
static ALLOCATOR: foley::mapped_alloc::MappedAware<mimalloc::MiMalloc> =
    foley::mapped_alloc::MappedAware(mimalloc::MiMalloc);

fn main() -> std::process::ExitCode {
    let cli = foley::cli::Cli::parse();
    match foley::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", foley::error::one_line(&format!("{error:#}")));
            std::process::ExitCode::FAILURE
        }
    }
}
