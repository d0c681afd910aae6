//! flagd-redis-sync: a flagd flag document in a Redis key, pushed to every flagd and
//! OpenFeature in-process provider over flagd's gRPC sync protocol.
//!
//! Data flows one way:
//! ```text
//! Redis ──keyspace event / poll──▶ source (watcher) ──bytes──▶ flags (validate, canonicalise,
//! SHA-256) ──Document──▶ hub (latest snapshot + broadcast, encoded once) ──▶ grpc (streams)
//! ```
//! - [`redis`]: the bottom layer: Redis options, URI, target, connections, topology.
//! - [`cli`]: the command line (only the binary uses it); [`config`]: the service's
//!   checked configuration.
//! - [`source`]: the Redis session: notifications, polls, reconnects.
//! - [`flags`]: documents, pure and synchronous.
//! - [`hub`]: the current snapshot and its fan-out.
//! - [`changes`]: what each accepted document changed; the last documents (`/changes`).
//! - [`fleet`]: every open stream and whether it has the current flags (`/fleet`).
//! - [`grpc`]: `flagd.sync.v1` and legacy `sync.v1` services.
//! - [`http`], [`status`], [`telemetry`]: health, readiness, metrics, logs.
//! - [`app`]: start-up and shutdown; [`start_error`]: why start-up failed, by class.
//! - [`tls`], [`auth`], [`reload`]: gRPC TLS (certificates reloaded, optional client CA),
//!   bearer tokens, files watched for changes.
//! - [`tools`]: operator subcommands (`put`, `watch`, `healthcheck`).
//! - [`doctor`]: production-readiness checks of the Redis (subcommand and at each connect,
//!   through the watcher's connect hook); [`finding`]: one check's result.
//! - [`validate`]: the `validate` subcommand. Import layers: docs/architecture.md (checked
//!   by a unit test, `layering.rs`).
#![forbid(unsafe_code)]

#[cfg(test)]
mod layering;

pub mod app;
pub mod auth;
pub mod changes;
pub mod changes_http;
pub mod cli;
pub mod config;
pub mod conn;
pub mod doctor;
pub mod files;
pub mod finding;
pub mod flags;
pub mod fleet;
pub mod fleet_http;
pub mod grpc;
pub mod http;
pub mod hub;
pub mod log_escape;
pub mod redis;
pub mod reload;
pub mod reset_guard;
pub mod selector;
pub mod snapshot;
pub mod source;
pub mod start_error;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod tools;
pub mod validate;
pub mod wire;
