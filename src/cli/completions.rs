//! `netqos completions bash|zsh|fish`: the completion script, generated from the same clap
//! definition as the parser, so it cannot fall out of step.

use super::Exit;

/// Shells netqos writes completions for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

pub fn run(shell: Shell, cmd: &mut clap::Command) -> Exit {
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    // Generated into memory: clap_complete panics on a write error, `out!` does not.
    let mut buf = Vec::new();
    clap_complete::generate(generator, cmd, "netqos", &mut buf);
    out!("{}", String::from_utf8_lossy(&buf));
    Exit::Ok
}
