//! The thresholds the checks judge by.

/// gRPC clients (flagd, Go, Java, Python, Node) refuse messages above this by default.
pub const CLIENT_LIMIT_BYTES: usize = 4 * 1024 * 1024;

/// A replica that has not heard from its master for longer than this is lagging.
pub const REPLICA_LAG_WARN_SECONDS: i64 = 10;

/// Memory or client use above this fraction of the limit is a warning.
pub const NEAR_LIMIT: f64 = 0.9;

/// A document above this fraction of the payload limit is a warning.
pub const SIZE_WARN: f64 = 0.75;
