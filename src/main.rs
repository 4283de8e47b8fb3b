//! The `netqos` command line. All work happens in the library; this only wires it up.

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
