//! The opening most black-box tests share, in one place (in the spirit of mini-redis's
//! `start_server`): a real redis-server of the test's own, a flag document stored under a
//! key, the real service binary pointed at it, and a stream whose first message has been
//! read. Each part stays public, so a test still reaches (and can break) every one.

use crate::{RedisServer, Service, SyncStream};
use anyhow::{Context, Result};

/// What [`start_server`] and [`Fixture::start`] return.
///
/// Keep it in a variable and move parts out of it (`let (redis, svc, mut s) = (t.redis,
/// t.svc, t.stream);`): what is not moved stays alive with `t`. (A destructuring `let`
/// that leaves `svc` out with `..` would drop, and so kill, the service at once.)
pub struct Started {
    pub redis: RedisServer,
    pub svc: Service,
    /// A SyncFlags stream with the empty selector; its first message is in `first`.
    pub stream: SyncStream,
    /// The first message's document, parsed.
    pub first: serde_json::Value,
}

/// `document` stored under `flags` on a fresh redis-server, the service started on it with
/// `args`, one stream opened and its first message read.
pub async fn start_server(document: &str, args: &[&str]) -> Result<Started> {
    Fixture::new(document).start(args).await
}

/// The less common openings: other redis-server arguments, another key, no stream.
pub struct Fixture {
    document: String,
    key: String,
    redis_args: Vec<String>,
}

impl Fixture {
    /// `document` under the key `flags` on a redis-server with no extra arguments.
    pub fn new(document: impl Into<String>) -> Self {
        Fixture {
            document: document.into(),
            key: "flags".into(),
            redis_args: Vec::new(),
        }
    }

    /// The key the document is stored under and the service watches.
    pub fn key(mut self, key: &str) -> Self {
        self.key = key.into();
        self
    }

    /// Extra redis-server arguments (see [`RedisServer::start_with`]).
    pub fn redis_args(mut self, args: &[&str]) -> Self {
        self.redis_args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Redis with the document, and the service started with `args` (its gRPC port
    /// accepting connections; not necessarily ready yet).
    pub async fn start_service(self, args: &[&str]) -> Result<(RedisServer, Service)> {
        let redis_args: Vec<&str> = self.redis_args.iter().map(String::as_str).collect();
        let redis = RedisServer::start_with(&redis_args)?;
        redis
            .set(&self.key, &self.document)
            .with_context(|| format!("storing the document under {}", self.key))?;
        let svc = Service::start(&redis.uri(&self.key), args).await?;
        Ok((redis, svc))
    }

    /// [`Fixture::start_service`], then a stream opened and its first message read.
    pub async fn start(self, args: &[&str]) -> Result<Started> {
        let (redis, svc) = self.start_service(args).await?;
        let mut stream = svc.stream("").await?;
        let first = stream
            .next_json()
            .await
            .with_context(|| format!("the first message; service log:\n{}", svc.logs()))?;
        Ok(Started {
            redis,
            svc,
            stream,
            first,
        })
    }
}
