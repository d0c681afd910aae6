//! Optional bearer-token check on the sync services (`--auth-token-file`).
//!
//! Clients send `authorization: Bearer <token>` (flagd: the source's `headers`; a bare
//! token without the scheme is accepted too). The file holds one token per line (blank
//! lines and `#` comments ignored), so a new token can be added before the old one is
//! removed; it is read again when it changes. Tokens are kept only as SHA-256 digests and
//! compared in constant time (digests of equal length, every token compared, no early
//! exit). Neither the tokens nor the header are ever logged or echoed.
//!
//! gRPC health is not behind the check (probes carry no token); reflection is.

use crate::reload::{read, Reloading};
use opentelemetry::metrics::Counter;
use opentelemetry::KeyValue;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tonic::{Request, Status};
use tracing::debug;

/// The tokens of `--auth-token-file`, as digests.
pub struct Tokens {
    digests: Reloading<Vec<[u8; 32]>>,
}

impl Tokens {
    /// Reads the file now: unreadable or empty is a start-up error.
    pub fn load(path: PathBuf) -> anyhow::Result<Self> {
        let digests = Reloading::new("--auth-token-file", vec![path], |p| {
            let text = String::from_utf8(read(&p[0])?).map_err(|_| {
                anyhow::anyhow!("--auth-token-file {}: not UTF-8 text", p[0].display())
            })?;
            let digests: Vec<[u8; 32]> = parse(&text).map(digest).collect();
            if digests.is_empty() {
                anyhow::bail!(
                    "--auth-token-file {}: no token in the file (one token per line)",
                    p[0].display()
                );
            }
            Ok(digests)
        })?;
        Ok(Tokens { digests })
    }

    /// Whether `presented` is one of the tokens.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let want = digest(presented);
        let mut found = subtle::Choice::from(0);
        for d in self.digests.get().iter() {
            found |= d.ct_eq(&want);
        }
        found.into()
    }
}

/// The tokens in a token file's text.
fn parse(text: &str) -> impl Iterator<Item = &[u8]> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::as_bytes)
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The interceptor on the sync services: passes everything when no token file is set.
#[derive(Clone)]
pub struct Auth {
    tokens: Option<Arc<Tokens>>,
    refused: Counter<u64>,
}

impl Auth {
    /// `refused` counts refusals (`reason` = `unauthenticated`).
    pub fn new(tokens: Option<Arc<Tokens>>, refused: Counter<u64>) -> Self {
        Auth { tokens, refused }
    }
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(tokens) = &self.tokens else {
            return Ok(req);
        };
        let presented = req
            .metadata()
            .get("authorization")
            .map(|v| bearer(v.as_bytes()));
        match presented {
            Some(t) if tokens.accepts(t) => Ok(req),
            found => {
                self.refused
                    .add(1, &[KeyValue::new("reason", "unauthenticated")]);
                debug!(
                    header = found.is_some(),
                    "request refused: missing or wrong bearer token"
                );
                Err(Status::unauthenticated(
                    "missing or wrong bearer token: send the header `authorization: Bearer <token>` \
                     with a token from the server's --auth-token-file",
                ))
            }
        }
    }
}

/// The token out of an `authorization` value: after `Bearer ` (any case), else all of it.
fn bearer(value: &[u8]) -> &[u8] {
    let v = value.trim_ascii();
    match v.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => v[7..].trim_ascii(),
        _ => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_and_header_forms() {
        let toks: Vec<&[u8]> = parse("# comment\n\n  one \ntwo\r\n").collect();
        assert_eq!(toks, vec![b"one".as_slice(), b"two".as_slice()]);
        assert_eq!(bearer(b"Bearer abc"), b"abc");
        assert_eq!(bearer(b"bearer  abc "), b"abc");
        assert_eq!(bearer(b"abc"), b"abc");
        assert_eq!(bearer(b"Basic abc"), b"Basic abc");
    }

    #[test]
    fn accepts_only_listed_tokens() {
        let dir = std::env::temp_dir().join(format!("auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("tokens");
        std::fs::write(&f, "alpha\nbeta\n").unwrap();
        let t = Tokens::load(f.clone()).unwrap();
        assert!(t.accepts(b"alpha") && t.accepts(b"beta"));
        assert!(!t.accepts(b"alph") && !t.accepts(b"") && !t.accepts(b"alphaa"));
        std::fs::write(&f, "# none\n").unwrap();
        assert!(Tokens::load(f).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
