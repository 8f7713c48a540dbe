//! The `pasarela` binary: parse the command line, run the subcommand.

fn main() -> std::process::ExitCode {
    pasarela::cli::main()
}
