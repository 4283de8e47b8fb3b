//! Exit statuses (the brief's table and `man 1 netqos`): every runtime error type maps to
//! one of these with an `exit()` method, so the CLI never decides a code from a message.

/// How a netqos command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    Ok = 0,
    /// The input is invalid (diagnostics printed).
    Invalid = 1,
    Usage = 2,
    /// An I/O or environment error; for the live commands: nothing was changed, or what
    /// is live was said.
    Io = 3,
    /// An apply failed and was rolled back.
    Failed = 4,
    /// An apply failed and so did its rollback (or a rollback failed).
    RollbackFailed = 5,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}
