//! The `foley` binary: parses the command line and reports errors as one line on stderr.

use clap::Parser;

/// Large tensors come and go every op; mimalloc reuses their pages where the system allocator
/// returned them to the kernel, which then zeroed fresh ones (11 % of a CPU generation).
/// `MappedAware` lets weights stay in their memory-mapped files instead of being copied.
#[global_allocator]
static ALLOCATOR: foley::mapped_alloc::MappedAware<mimalloc::MiMalloc> =
    foley::mapped_alloc::MappedAware(mimalloc::MiMalloc);

fn main() -> std::process::ExitCode {
    // Weights are copied out of their memory-mapped files into gigabytes of fresh memory; 2 MB
    // pages fault in 512× less often than 4 KB ones (AudioLDM 2 loads in 1.3 s instead of 3 s, warm).
    // MIMALLOC_ALLOW_LARGE_OS_PAGES=0 in the environment turns this off.
    if std::env::var_os("MIMALLOC_ALLOW_LARGE_OS_PAGES").is_none() {
        // SAFETY: sets a mimalloc option before any thread is started; no pointers are involved.
        unsafe { libmimalloc_sys::mi_option_set(libmimalloc_sys::mi_option_large_os_pages, 1) };
    }
    let cli = foley::cli::Cli::parse();
    match foley::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", foley::error::one_line(&format!("{error:#}")));
            std::process::ExitCode::FAILURE
        }
    }
}
