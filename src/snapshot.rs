//! `--snapshot-path`: the last good document on disk, so a service restarted while Redis
//! is down still serves flags. Written atomically (temporary file, fsync, rename, fsync
//! of the directory): a crash leaves the old file or the new one, never half of one.

use crate::flags::{self, Document};
use std::io::Write;
use std::path::Path;

/// Writes `json` to `path` atomically.
pub fn save(path: &Path, json: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(json.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Saves documents in the background, in order, always the newest: a slow disk never
/// delays the watcher, and an older document can never overwrite a newer one.
pub fn spawn_writer(
    path: std::path::PathBuf,
) -> tokio::sync::watch::Sender<Option<std::sync::Arc<String>>> {
    let (tx, mut rx) = tokio::sync::watch::channel::<Option<std::sync::Arc<String>>>(None);
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let Some(json) = rx.borrow_and_update().clone() else {
                continue;
            };
            let p = path.clone();
            match tokio::task::spawn_blocking(move || save(&p, &json)).await {
                Ok(Ok(())) => tracing::debug!(path = %path.display(), "snapshot saved"),
                Ok(Err(e)) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot save the snapshot")
                }
                Err(e) => tracing::error!(error = %e, "snapshot writer failed"),
            }
        }
    });
    tx
}

/// Reads and validates a saved document. `Ok(None)` when there is no file yet.
pub fn load(path: &Path, opts: &flags::Options) -> Result<Option<Document>, String> {
    match crate::files::read_limited(path, opts.max_bytes as u64) {
        Ok(bytes) => flags::parse(&bytes, opts)
            .map(Some)
            .map_err(|e| e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = std::env::temp_dir().join(format!("frs-snap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flags.json");
        let opts = flags::Options::default();
        assert!(load(&path, &opts).unwrap().is_none());
        let json = r#"{"flags":{"a":{"state":"ENABLED","variants":{"x":1}}}}"#;
        save(&path, json).unwrap();
        save(&path, json).unwrap();
        assert_eq!(load(&path, &opts).unwrap().unwrap().flag_count, 1);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left behind"
        );
        std::fs::write(&path, "{").unwrap();
        assert!(load(&path, &opts).unwrap_err().contains("not valid JSON"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
