//! The `foley` binary: parses the command line and reports errors as one line on stderr.

use clap::Parser;

/// Large tensors come and go every op; mimalloc reuses their pages where the system allocator
/// returned them to the kernel, which then zeroed fresh ones (11 % of a CPU generation).
/// `MappedAware` lets weights stay in their memory-mapped files instead of being copied.
#[global_allocator]
static ALLOCATOR: foley::mapped_alloc::MappedAware<mimalloc::MiMalloc> =
    foley::mapped_alloc::MappedAware(mimalloc::MiMalloc);

/// Spins candle's elementwise worker makes before it parks (candle's default: 25 000). On
/// each op's end that worker spins while `gemm`'s rayon threads want the same cores; with 50
/// an AudioLDM 2 step took 2.47–2.74 s against 2.79–3.08 s (2 cores, alternating runs,
/// docs/PERFORMANCE.md). A value the user set wins.
const CANDLE_SPIN_LIMIT: &str = "50";

fn main() -> std::process::ExitCode {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // SAFETY: the first statement of `main`, before any thread exists to read the
        // environment; candle reads it when its pool starts, later.
        unsafe { std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", CANDLE_SPIN_LIMIT) };
    }
    foley::mimalloc_options::hold_freed_pages();
    let cli = foley::cli::Cli::parse();
    match foley::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", foley::error::one_line(&format!("{error:#}")));
            std::process::ExitCode::FAILURE
        }
    }
}
