//! The `pasarela` binary: parse the command line, run the subcommand.

// mimalloc: the gateway allocates many small, short-lived buffers per request (JSON, headers);
// glibc's malloc was 13% of the profile at saturation (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    pasarela::cli::main()
}
