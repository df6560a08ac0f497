//! Child processes that cannot outlive their test: lookup of external binaries on PATH and a
//! guard that stops the process on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How long [`ChildGuard::stop`] waits after SIGTERM before it sends SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How often a stopping child is checked for exit.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Finds `name` in the directories of PATH.
///
/// Panics when the binary is missing, with a message telling the reader to run scripts/test,
/// which installs the test tools. Tests that need a tool fail rather than skip silently.
pub fn find_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| {
            panic!(
                "{name} not found on PATH; run scripts/test, which installs it (Debian package \
                 tinyproxy-bin, microsocks or prometheus), or install it yourself"
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;

    path.metadata()
        .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A child process that is stopped when the guard is dropped: SIGTERM first, then SIGKILL
/// after [`STOP_GRACE`]. Dropping also reaps it, so no zombie or orphan is left behind unless
/// the test process itself is killed.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
}

impl ChildGuard {
    /// Wraps `child`. The `name` appears in panic messages.
    pub fn new(name: &str, child: Child) -> ChildGuard {
        ChildGuard {
            name: name.to_string(),
            child: Some(child),
        }
    }

    /// Returns the process id.
    pub fn id(&self) -> u32 {
        self.child().id()
    }

    /// Returns the exit status if the process has exited, without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let name = self.name.clone();
        self.child_mut()
            .try_wait()
            .unwrap_or_else(|error| panic!("check whether {name} exited: {error}"))
    }

    /// Sends SIGTERM, waits up to [`STOP_GRACE`] for the exit, then sends SIGKILL, and
    /// returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        if let Some(status) = self.try_wait() {
            return status;
        }

        send_signal(self.id(), libc::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                return status;
            }
            std::thread::sleep(POLL_INTERVAL);
        }

        self.kill()
    }

    /// Sends SIGKILL and returns the exit status.
    pub fn kill(&mut self) -> ExitStatus {
        let name = self.name.clone();
        let child = self.child_mut();
        // kill fails only when the process has already exited, which wait then reports.
        let _ = child.kill();
        child
            .wait()
            .unwrap_or_else(|error| panic!("wait for {name} to exit: {error}"))
    }

    fn child(&self) -> &Child {
        self.child
            .as_ref()
            .expect("the child is present until drop")
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("the child is present until drop")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

fn send_signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("process ids fit in pid_t");
    // SAFETY: kill(2) only sends a signal. The pid belongs to our own unreaped child, so no
    // other process can have reused it. A failed kill shows up as a missed exit, which the
    // SIGKILL fallback handles, so its result is ignored.
    unsafe {
        libc::kill(pid, signal);
    }
}
