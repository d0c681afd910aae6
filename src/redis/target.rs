//! A Redis target: where the server is (one node, a Sentinel group, a Cluster), which
//! keys hold flag documents and how, the credentials and the TLS files. `Debug` and
//! `Display` never show a password. Parsing is in `uri.rs`, connecting in `connect.rs`.

use super::error::TargetError;
use std::fmt;
use std::path::PathBuf;

/// Where a Redis server is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisAddr {
    Tcp {
        host: String,
        port: u16,
        tls: bool,
    },
    Unix(PathBuf),
    /// `redis+sentinel://`: ask these sentinels where the master named `master` is.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master: String,
        tls: bool,
        /// Credentials for the sentinels themselves (`sentinel_user=`,
        /// `sentinel_password=`); the data nodes use the URI's.
        auth: Option<(Option<String>, String)>,
    },
    /// `redis+cluster://`: any of these nodes tells which master owns the key's slot.
    Cluster {
        seeds: Vec<(String, u16)>,
        tls: bool,
    },
}

impl RedisAddr {
    /// Whether traffic to the data nodes is TLS.
    pub fn is_tls(&self) -> bool {
        match self {
            RedisAddr::Tcp { tls, .. }
            | RedisAddr::Sentinel { tls, .. }
            | RedisAddr::Cluster { tls, .. } => *tls,
            RedisAddr::Unix(_) => false,
        }
    }
}

/// How a source's document is stored in its key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Storage {
    /// A string holding the whole JSON document (SET).
    #[default]
    String,
    /// A hash: one field per flag (HSET key FLAG JSON), plus optional `$evaluators` and
    /// `$metadata` fields; assembled into one document.
    Hash,
}

impl Storage {
    pub(super) fn parse(s: &str) -> Result<Self, String> {
        match s {
            "string" => Ok(Storage::String),
            "hash" => Ok(Storage::Hash),
            other => Err(format!("type={other:?}: use type=string or type=hash")),
        }
    }
}

/// One flag source: a name clients select it by, and the Redis key behind it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SourceSpec {
    /// `source=NAME` selects it; for a `key=` in the URI, the key itself.
    pub name: String,
    pub key: String,
    pub storage: Storage,
}

impl SourceSpec {
    /// Parses `--source NAME=KEY[;type=hash]`.
    pub fn parse(s: &str, default: Storage) -> Result<Self, TargetError> {
        let (spec, storage) = match s.split_once(";type=") {
            Some((spec, t)) => (spec, Storage::parse(t).map_err(TargetError::Source)?),
            None => (s, default),
        };
        match spec.split_once('=') {
            Some((name, key)) if !name.trim().is_empty() && !key.is_empty() => Ok(SourceSpec {
                name: name.trim().to_string(),
                key: key.to_string(),
                storage,
            }),
            _ => Err(TargetError::Source(format!(
                "--source {s:?}: expected NAME=KEY or NAME=KEY;type=hash (NAME is what clients \
                 select with source=NAME, KEY the Redis key)"
            ))),
        }
    }
}

/// TLS settings for a rediss:// target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// CA certificate(s) to trust instead of the system roots.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (mutual TLS).
    pub client: Option<(PathBuf, PathBuf)>,
    /// Accept any server certificate (development only).
    pub insecure: bool,
}

/// A parsed `--redis-uri`. `Debug` and `Display` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub addr: RedisAddr,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The first source's key (the one `put`, `watch` and the doctor work on).
    pub key: String,
    /// Every source, in precedence order: on a flag name clash the later one wins.
    pub sources: Vec<SourceSpec>,
    /// The URI's `type=`: the storage of its keys, and the default for `--source`.
    pub storage: Storage,
    /// rediss:// only: `--redis-ca-path`, `--redis-cert-path`/`--redis-key-path`,
    /// `--redis-tls-insecure`.
    pub tls: RedisTls,
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisTarget({self})")
    }
}

pub(super) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn host_list(nodes: &[(String, u16)]) -> String {
    nodes
        .iter()
        .map(|(h, p)| host_port(h, *p))
        .collect::<Vec<_>>()
        .join(",")
}

impl fmt::Display for RedisTarget {
    /// The URI with any password replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match (&self.username, &self.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (Some(u), None) => format!("{u}@"),
            (None, Some(_)) => ":***@".to_string(),
            (None, None) => String::new(),
        };
        let mut query: Vec<String> = Vec::new();
        // Every key watched (a `--source` key too: log lines should name it).
        for s in &self.sources {
            query.push(format!("key={}", s.key));
        }
        if self.sources.is_empty() && !self.key.is_empty() {
            query.push(format!("key={}", self.key));
        }
        if self.storage == Storage::Hash {
            query.push("type=hash".into());
        }
        let tls_s = if self.addr.is_tls() { "s" } else { "" };
        let db = self.db;
        match &self.addr {
            RedisAddr::Tcp { host, port, .. } => {
                let hp = host_port(host, *port);
                write!(f, "redis{tls_s}://{auth}{hp}/{db}?{}", query.join("&"))
            }
            RedisAddr::Unix(p) => write!(
                f,
                "unix://{auth}{}?db={db}&{}",
                p.display(),
                query.join("&")
            ),
            RedisAddr::Sentinel {
                sentinels,
                master,
                auth: sentinel_auth,
                ..
            } => {
                if let Some((user, _)) = sentinel_auth {
                    if let Some(u) = user {
                        query.push(format!("sentinel_user={u}"));
                    }
                    query.push("sentinel_password=***".into());
                }
                let hosts = host_list(sentinels);
                write!(
                    f,
                    "redis{tls_s}+sentinel://{auth}{hosts}/{master}/{db}?{}",
                    query.join("&")
                )
            }
            RedisAddr::Cluster { seeds, .. } => {
                let hosts = host_list(seeds);
                write!(
                    f,
                    "redis{tls_s}+cluster://{auth}{hosts}/?{}",
                    query.join("&")
                )
            }
        }
    }
}

impl RedisTarget {
    /// Adds a `--source`; names and keys must stay unique.
    pub fn add_source(&mut self, spec: SourceSpec) -> Result<(), TargetError> {
        if let Some(s) = self.sources.iter().find(|s| s.name == spec.name) {
            return Err(TargetError::DuplicateName {
                name: spec.name,
                first: s.key.clone(),
                second: spec.key,
            });
        }
        if let Some(s) = self.sources.iter().find(|s| s.key == spec.key) {
            return Err(TargetError::DuplicateKey {
                key: spec.key,
                first: s.name.clone(),
                second: spec.name,
            });
        }
        if self.sources.is_empty() {
            self.key = spec.key.clone();
        }
        self.sources.push(spec);
        Ok(())
    }

    /// The same credentials and TLS settings, for one node at `host:port` (a resolved
    /// Sentinel master or Cluster slot owner).
    pub fn at_node(&self, host: &str, port: u16) -> RedisTarget {
        RedisTarget {
            addr: RedisAddr::Tcp {
                host: host.to_string(),
                port,
                tls: self.addr.is_tls(),
            },
            ..self.clone()
        }
    }

    /// The keyspace-notification channel for a key.
    pub fn channel_of(&self, key: &str) -> String {
        format!("__keyspace@{}__:{}", self.db, key)
    }

    /// The keyspace-notification channel for the first key.
    pub fn keyspace_channel(&self) -> String {
        self.channel_of(&self.key)
    }

    /// How the first source is stored (the key `put` and the doctor work on).
    pub fn storage_of_first(&self) -> Storage {
        self.sources.first().map_or(self.storage, |s| s.storage)
    }

    /// Refuses a target without a key (`put`, `doctor`: they have no `--source`).
    pub fn require_key(self) -> Result<Self, TargetError> {
        if self.sources.is_empty() {
            return Err(TargetError::NoKey {
                sources_allowed: false,
            });
        }
        Ok(self)
    }
}
