//! Small helpers the checks share: CONFIG GET, error kinds and text, sizes.

use crate::redis::reply::{config_value, query};
use redis::aio::MultiplexedConnection;
use redis::RedisError;

/// One CONFIG GET value, or why it could not be read.
pub(super) async fn config_get(
    con: &mut MultiplexedConnection,
    name: &str,
) -> Result<String, String> {
    let v = query(con, &["CONFIG", "GET", name])
        .await
        .map_err(|e| format!("CONFIG GET refused ({})", reason(&e)))?;
    config_value(&v).ok_or_else(|| format!("CONFIG GET {name} returned nothing"))
}

pub(super) fn is_noperm(e: &RedisError) -> bool {
    crate::redis::codes::is_no_perm(e)
}

/// The error as one line.
pub(super) fn reason(e: &RedisError) -> String {
    e.to_string().replace(['\r', '\n'], " ").trim().to_string()
}

pub(super) fn human(bytes: i64) -> String {
    const KIB: f64 = 1024.0;
    const MIB: f64 = KIB * KIB;
    match bytes as f64 {
        b if b >= MIB => format!("{:.1} MiB", b / MIB),
        b if b >= KIB => format!("{:.1} KiB", b / KIB),
        _ => format!("{bytes} B"),
    }
}
