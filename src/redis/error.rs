//! Why a Redis target cannot be built from the options. Each kind a person can act on is
//! its own variant (callers match on the variant, never on the text); file errors keep
//! their `io::Error` as `source`. No message contains the URI or a password.

/// A `--redis-uri` or Redis option that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The URI does not parse or names something unsupported; the message says what
    /// (it never echoes the URI, which may hold a password).
    #[error("--redis-uri: {0}")]
    Uri(String),
    /// Neither the URI nor a `--source` names a key.
    #[error("--redis-uri: no key: add ?key=NAME (the Redis key that holds the flag document){}",
        if *.sources_allowed { " or give --source NAME=KEY" } else { "" })]
    NoKey {
        /// Whether `--source` is an option of this command.
        sources_allowed: bool,
    },
    /// A `--source` that is not `NAME=KEY[;type=hash]`, or an unknown `type=`.
    #[error("{0}")]
    Source(String),
    /// Two sources with one name.
    #[error("source name {name:?} is used twice (key {first:?} and key {second:?}); names must be unique")]
    DuplicateName {
        name: String,
        first: String,
        second: String,
    },
    /// Two sources with one key.
    #[error("key {key:?} is given to two sources ({first:?} and {second:?}); give it once")]
    DuplicateKey {
        key: String,
        first: String,
        second: String,
    },
    #[error("REDIS_PASSWORD and --redis-password-file are both set: give only one")]
    TwoPasswords,
    #[error("--redis-password-file {0} is empty")]
    EmptyPasswordFile(String),
    /// TLS options given for a target that is not `rediss…://`.
    #[error(
        "--redis-ca-path, --redis-cert-path, --redis-key-path and --redis-tls-insecure need a \
         rediss:// URI (TLS: rediss://, rediss+sentinel:// or rediss+cluster://)"
    )]
    TlsWithoutRediss,
    /// A file an option names cannot be read.
    #[error("{flag}: cannot read {path}: {source}")]
    File {
        flag: &'static str,
        path: String,
        source: std::io::Error,
    },
}
