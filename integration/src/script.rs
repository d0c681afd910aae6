//! A provider-check script (Node or Python) driven over a line protocol: it prints
//! `<TAG> <json>` lines on stdout (READY, CHANGED, STALE, RECONNECTED, RESULT…), reads
//! commands on stdin, and writes every provider event and log line on stderr, which goes
//! to a file quoted in failure messages. Every read and write is under a timeout; the
//! child is killed on drop.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::fs::{self, File};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::WAIT;

/// One run of a script.
pub struct LineScript {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Holds `stderr.log`.
    dir: tempfile::TempDir,
    /// How long READY may take (the runtime starting, the provider's first message).
    ready_wait: Duration,
    /// How long RECONNECTED may take (the provider's own backoffs).
    reconnect_wait: Duration,
}

impl LineScript {
    /// Spawns `cmd` (program and arguments set) with stdin and stdout piped and stderr to
    /// a file. The providers read `FLAGD_*` for anything not passed: none may leak in.
    pub fn spawn(
        mut cmd: Command,
        what: &str,
        ready_wait: Duration,
        reconnect_wait: Duration,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let stderr = File::create(dir.path().join("stderr.log")).expect("stderr log");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("FLAGD_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        LineScript {
            child,
            stdin,
            stdout,
            dir,
            ready_wait,
            reconnect_wait,
        }
    }

    /// What the script wrote on stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The next line, which must be `<tag> <json>`, within `within`.
    pub async fn next(&mut self, tag: &str, within: Duration) -> Result<Value> {
        let line = match tokio::time::timeout(within, self.stdout.next_line()).await {
            Err(_) => bail!("no {tag} line within {within:?}"),
            Ok(Err(e)) => bail!("reading the script's stdout: {e}"),
            Ok(Ok(None)) => bail!("the script ended before {tag}: {:?}", self.child.try_wait()),
            Ok(Ok(Some(line))) => line,
        };
        match line.split_once(' ') {
            Some((t, json)) if t == tag => {
                serde_json::from_str(json).with_context(|| format!("parsing {line:?}"))
            }
            _ => bail!("expected a {tag} line, got {line:?}"),
        }
    }

    /// [`Self::next`], panicking with the script's stderr on failure.
    pub async fn expect(&mut self, tag: &str, within: Duration) -> Value {
        match self.next(tag, within).await {
            Ok(v) => v,
            Err(e) => panic!("{e:#}\n--- script stderr ---\n{}", self.stderr()),
        }
    }

    /// The evaluations the provider reported once it was ready.
    pub async fn ready(&mut self) -> Value {
        self.expect("READY", self.ready_wait).await
    }

    /// The next change of evaluations: `{"flags": {...}, "flags_changed": [...]}`.
    pub async fn changed(&mut self) -> Value {
        self.expect("CHANGED", WAIT).await
    }

    /// The connection is lost: `{"message": "..."}`.
    pub async fn stale(&mut self) -> Value {
        self.expect("STALE", WAIT).await
    }

    /// Ready again after a STALE: the evaluations then.
    pub async fn reconnected(&mut self) -> Value {
        self.expect("RECONNECTED", self.reconnect_wait).await
    }

    /// Writes one line on the script's stdin, under a timeout.
    pub async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        let write = async {
            stdin.write_all(format!("{line}\n").as_bytes()).await?;
            stdin.flush().await
        };
        match tokio::time::timeout(WAIT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("writing to the script: {e}\n{}", self.stderr()),
            Err(_) => panic!("writing to the script took over {WAIT:?}"),
        }
    }

    /// Closes the script's stdin and expects a clean exit with nothing more said.
    pub async fn finish(mut self) {
        drop(self.stdin.take());
        let rest = tokio::time::timeout(WAIT, async {
            let mut rest = Vec::new();
            while let Some(line) = self.stdout.next_line().await? {
                rest.push(line);
            }
            let status = self.child.wait().await?;
            anyhow::Ok((rest, status))
        })
        .await;
        match rest {
            Ok(Ok((rest, status))) => assert!(
                rest.is_empty() && status.success(),
                "the script ended with {status} after {rest:?}\n--- stderr ---\n{}",
                self.stderr()
            ),
            Ok(Err(e)) => panic!("{e:#}"),
            Err(_) => panic!(
                "the script did not exit within {WAIT:?} of its stdin closing\n--- stderr ---\n{}",
                self.stderr()
            ),
        }
    }
}
