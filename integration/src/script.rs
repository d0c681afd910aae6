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
use serde_json::json;

/// One flag's evaluation as the scripts report it.
pub fn eval(value: Value, variant: &str, reason: &str) -> Value {
    json!({"value": value, "variant": variant, "reason": reason, "error": null})
}

/// A flag the provider does not have: the default, and FLAG_NOT_FOUND.
pub fn not_found(default: Value) -> Value {
    json!({"value": default, "variant": null, "reason": "ERROR", "error": "FLAG_NOT_FOUND"})
}

/// What a provider evaluates from `testing-flags.json` for the flags the testbed tests
/// ask for (`boolean-flag`, `string-flag`, `integer-flag`, `float-flag`, `object-flag`,
/// `context-aware`, and `changing-flag`, which it does not hold).
pub fn testbed_evaluations() -> Value {
    let template =
        json!({"showImages": true, "title": "Check out these pics!", "imagesPerPage": 100});
    json!({
        "boolean-flag": eval(json!(true), "on", "STATIC"),
        "string-flag": eval(json!("hi"), "greeting", "STATIC"),
        "integer-flag": eval(json!(10), "ten", "STATIC"),
        "float-flag": eval(json!(0.5), "half", "STATIC"),
        "object-flag": eval(template, "template", "STATIC"),
        "context-aware": eval(json!("EXTERNAL"), "external", "TARGETING_MATCH"),
        "changing-flag": not_found(json!("<default>")),
    })
}

/// The same flags once `changing-flag.json` replaced the whole set: only `changing-flag`
/// is left. `float_default` as the script reports the default (`-1` in JavaScript,
/// `-1.0` in Python).
pub fn replaced_by_changing_flag(float_default: Value) -> Value {
    json!({
        "boolean-flag": not_found(json!(false)),
        "string-flag": not_found(json!("<default>")),
        "integer-flag": not_found(json!(-1)),
        "float-flag": not_found(float_default),
        "object-flag": not_found(json!({})),
        "context-aware": not_found(json!("<default>")),
        "changing-flag": eval(json!("foo"), "foo", "STATIC"),
    })
}

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
