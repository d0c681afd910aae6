//! SHA-256 of a canonical document that resumes where the last document hashed stops
//! being the same. SHA-256 reads its input from the front, so the state after the first
//! `k` bytes depends on those bytes only: the states after every [`STEP`] bytes of the
//! last document are kept, and a new document is hashed on from the last kept state at
//! or before the first byte where the two differ. A flag changed halfway through a 1 MB
//! document hashes half a megabyte; one changed at the very front hashes it all, as
//! [`Digest::of`] does. The result is always [`Digest::of`] of the whole text.
//!
//! Memory: one state (about 100 bytes) per 64 KiB of the document.

use super::common::common_prefix;
use super::Digest;
use sha2::{Digest as _, Sha256};

/// Bytes between two kept states (small in tests, so that the memo's property test, whose
/// documents are a few KB, resumes at many places).
const STEP: usize = if cfg!(test) { 256 } else { 64 * 1024 };

/// The states of the hash after each multiple of [`STEP`] bytes of the last text hashed.
#[derive(Clone, Default)]
pub struct Resumable(Vec<Sha256>);

impl Resumable {
    /// The digest of `next`, resuming from `self` (the states of `last`), and the states
    /// of `next` for the next call.
    pub fn digest(&self, last: &str, next: &str) -> (Digest, Resumable) {
        let same = common_prefix(last.as_bytes(), next.as_bytes());
        // States after 1, 2, … steps; state k (0-based) covers the first (k + 1) * STEP bytes.
        let keep = (same / STEP).min(self.0.len());
        let mut states = Vec::with_capacity(next.len() / STEP);
        states.extend_from_slice(&self.0[..keep]);
        let mut hasher = states.last().cloned().unwrap_or_default();
        let mut at = keep * STEP;
        let bytes = next.as_bytes();
        while bytes.len() - at >= STEP {
            hasher.update(&bytes[at..at + STEP]);
            at += STEP;
            states.push(hasher.clone());
        }
        hasher.update(&bytes[at..]);
        (Digest(hasher.finalize().into()), Resumable(states))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resumed_digest_is_the_digest_of_the_whole_text() {
        let base: String = (0..300_000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let mut edits = vec![base.clone()];
        for at in [0, 1, STEP - 1, STEP, STEP + 1, 3 * STEP + 7, base.len() - 1] {
            let mut t = base.clone();
            t.replace_range(at..at + 1, "#");
            edits.push(t);
        }
        // Longer, shorter, empty, exactly one step, and back.
        edits.push(format!("{base}tail"));
        edits.push(base[..2 * STEP + 3].to_string());
        edits.push(String::new());
        edits.push(base[..STEP].to_string());
        edits.push(base.clone());
        let (mut last, mut states) = (String::new(), Resumable::default());
        for t in &edits {
            let (d, next) = states.digest(&last, t);
            assert_eq!(d, Digest::of(t.as_bytes()), "length {}", t.len());
            assert_eq!(next.0.len(), t.len() / STEP);
            (last, states) = (t.clone(), next);
        }
    }
}
