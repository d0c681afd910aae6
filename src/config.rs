//! The service's checked configuration: what `cli.rs` builds from the command line and
//! the environment once every option has been checked (files readable, combinations that
//! work). Nothing here parses arguments.

use crate::redis::{RedisTarget, TargetError};
use clap::ValueEnum;
use std::path::PathBuf;
use std::time::Duration;

/// Behaviour when the flag key does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnMissingKey {
    /// Keep serving the last good document (and report the key as missing).
    Keep,
    /// Push an empty flag set `{"flags":{}}`: clients fall back to code defaults.
    Empty,
}

/// Everything the service needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub redis: RedisTarget,
    pub poll_interval: Duration,
    pub grpc_addr: std::net::SocketAddr,
    pub tls: Option<crate::tls::ServerTlsFiles>,
    /// `--auth-token-file`.
    pub auth_token_file: Option<PathBuf>,
    pub socket_path: Option<PathBuf>,
    pub management_port: Option<u16>,
    pub documents: crate::flags::Options,
    pub context: Vec<(String, String)>,
    pub shutdown_grace: Duration,
    pub on_missing_key: OnMissingKey,
    pub snapshot_path: Option<PathBuf>,
    pub max_streams: Option<u64>,
    pub max_stream_duration: Option<Duration>,
    /// `--max-connections` (`None`: derived from the open-files limit).
    pub max_connections: Option<usize>,
    pub redis_timeout: Duration,
    pub redis_ping_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A Redis option (URI, password, TLS files, sources).
    #[error(transparent)]
    Redis(#[from] TargetError),
    #[error("{0}")]
    Invalid(String),
}
