//! Values loaded from files and loaded again when the files change: the gRPC server's
//! certificate, key and client CA (cert-manager and similar tools rewrite them in place or
//! swap a symlink) and the bearer-token file.
//!
//! Nothing runs in the background: on use, at most once per [`CHECK_INTERVAL`], the files'
//! modification time, size and inode are compared with those of the last load. A load that
//! fails (a file half-written, a new certificate whose key is not written yet) leaves the
//! previous value in service and is tried again at the next check; each distinct failure is
//! logged once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tracing::{info, warn};

/// How often, at most, the files are looked at.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

type Loader<T> = Box<dyn Fn(&[PathBuf]) -> anyhow::Result<T> + Send + Sync>;

/// What identifies one version of a file: modification time, size, inode.
type Stamp = Option<(SystemTime, u64, u64)>;

/// A value built from files, rebuilt when they change.
pub struct Reloading<T> {
    what: &'static str,
    paths: Vec<PathBuf>,
    load: Loader<T>,
    state: Mutex<State<T>>,
}

struct State<T> {
    value: Arc<T>,
    stamps: Vec<Stamp>,
    checked: Instant,
    failing: Option<String>,
}

impl<T> Reloading<T> {
    /// Loads the value now: a failure here is a start-up error.
    pub fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        load: impl Fn(&[PathBuf]) -> anyhow::Result<T> + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        let stamps = stamps(&paths);
        let value = Arc::new(load(&paths)?);
        Ok(Reloading {
            what,
            paths,
            load: Box::new(load),
            state: Mutex::new(State {
                value,
                stamps,
                checked: Instant::now(),
                failing: None,
            }),
        })
    }

    /// The current value, loaded again first if the files changed since the last load.
    pub fn get(&self) -> Arc<T> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.checked.elapsed() < CHECK_INTERVAL {
            return st.value.clone();
        }
        st.checked = Instant::now();
        // Stamps first: a change during the load is seen at the next check.
        let now = stamps(&self.paths);
        if now == st.stamps {
            return st.value.clone();
        }
        match (self.load)(&self.paths) {
            Ok(v) => {
                st.value = Arc::new(v);
                st.stamps = now;
                st.failing = None;
                info!(what = self.what, files = ?self.paths, "files changed: reloaded");
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if st.failing.as_deref() != Some(msg.as_str()) {
                    warn!(what = self.what, error = %msg,
                        "files changed but cannot be loaded; keeping the previous version and retrying");
                    st.failing = Some(msg);
                }
            }
        }
        st.value.clone()
    }
}

fn stamps(paths: &[PathBuf]) -> Vec<Stamp> {
    paths.iter().map(|p| stamp(p)).collect()
}

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    // Follows symlinks: a Kubernetes secret volume swaps `..data`, the target changes.
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// Reads a file, naming it in the error.
pub fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    crate::files::read_secret(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloads_on_change_and_keeps_the_last_good_value() {
        let dir = tempfile_dir();
        let f = dir.join("v");
        std::fs::write(&f, "1").unwrap();
        let r = Reloading::new("test", vec![f.clone()], |p| {
            let s = String::from_utf8(read(&p[0])?)?;
            Ok(s.trim().parse::<u32>()?)
        })
        .unwrap();
        assert_eq!(*r.get(), 1);
        std::fs::write(&f, "22").unwrap();
        force_check(&r);
        assert_eq!(*r.get(), 22);
        std::fs::write(&f, "not a number").unwrap();
        force_check(&r);
        assert_eq!(*r.get(), 22, "a bad file keeps the last good value");
        std::fs::write(&f, "333").unwrap();
        force_check(&r);
        assert_eq!(*r.get(), 333);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn force_check<T>(r: &Reloading<T>) {
        r.state.lock().unwrap().checked = Instant::now() - CHECK_INTERVAL;
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "reload-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
