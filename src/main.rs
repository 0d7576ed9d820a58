//! The `outpost` binary: parses the command line and calls the library.

fn main() -> std::process::ExitCode {
    outpost::cli::main()
}
