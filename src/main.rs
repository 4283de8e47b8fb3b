//! The `netqos` command line. All work happens in the library; this only wires it up.

mod cli;

fn main() -> std::process::ExitCode {
    // Run by a container runtime as a CNI plugin (`type: netqos` in a conflist).
    if std::env::var_os("CNI_COMMAND").is_some() {
        return netqos::plugin::main();
    }
    cli::run()
}
