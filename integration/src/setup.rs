//! Installing the real clients the compatibility tests run (a Python venv, node_modules):
//! one install shared by concurrent test processes, every step under a time limit.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Takes an exclusive flock on `file`, polling so that the wait has a bound.
pub fn lock_exclusive(file: &File, within: Duration) -> Result<()> {
    use std::os::fd::AsRawFd;
    let deadline = Instant::now() + within;
    loop {
        // SAFETY: flock(2) on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err.into());
        }
        if Instant::now() > deadline {
            bail!("another test process held the install lock for more than {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a set-up command to completion within `within`, failing with its output.
pub fn run_to_completion(cmd: &mut Command, what: &str, within: Duration) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("out.log");
    let file = File::create(&log)?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{what} did not finish within {within:?}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if !status.success() {
        bail!(
            "{what} failed ({status}):\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    Ok(())
}
