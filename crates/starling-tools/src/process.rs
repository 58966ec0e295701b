//! Our own child processes: signals sent to them by pid (through rustix's safe `kill`),
//! and how they ended.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

pub use rustix::process::Signal;

/// Sends `sig` to the process `pid`; a pid that is gone or invalid is ignored (the caller
/// only signals children it has not reaped yet).
pub fn signal(pid: u32, sig: Signal) {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// `exit code N`, `signal N`, or what the platform says.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    }
}
