//! The bottom layer: reaching Redis, and nothing about flags, clients or the service.
//! It imports nothing else from this crate; everything that talks to Redis (the watcher,
//! `put`, `doctor`, the tests) builds its target and connection here.
//!
//! - [`args`]: the Redis options, one clap group flattened into every command that talks
//!   to Redis, and the target they build.
//! - [`target`]: what a target is (address, keys and their storage, credentials, TLS
//!   files); `Display` redacts passwords. `uri.rs` parses `--redis-uri`.
//! - [`connect`]: connection settings, one connection with timeouts, and the hint after a
//!   failed connect (by the TLS error's type).
//! - [`topology`]: the node to use (Sentinel master, Cluster slot owner), checks that it
//!   still is, the key's hash slot.
//! - [`keyspace`]: the `notify-keyspace-events` letters needed, merged into the current.
//! - [`reply`]: reply values as text and numbers; the plain read of a key.
//! - [`codes`]: what kind of failure a Redis error is (by kind and code, never text).
//! - [`error`]: why a target cannot be built ([`TargetError`]).
//!
//! Named `redis` for what it is; inside this crate the redis-rs crate is still `redis`
//! (a path from a submodule) and this layer is `crate::redis`.

pub mod args;
pub mod codes;
pub mod connect;
pub mod error;
pub mod keyspace;
pub mod reply;
pub mod target;
pub mod topology;
mod uri;

pub use args::RedisArgs;
pub use error::TargetError;
pub use target::{RedisAddr, RedisTarget, RedisTls, SourceSpec, Storage};
