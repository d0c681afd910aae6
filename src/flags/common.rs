//! Where two byte strings stop agreeing, from the front or from the back: how the memo
//! finds the part of a document that changed, how the digest knows where to hash on
//! from, and how the change history stores differences.

/// How many leading bytes `a` and `b` share: compared a block at a time (a byte loop
/// over a megabyte costs milliseconds), then byte by byte.
pub fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    common(a.len().min(b.len()), |i, n| a[i..i + n] == b[i..i + n])
}

/// How many trailing bytes `a` and `b` share, at most `max`.
pub fn common_suffix(a: &[u8], b: &[u8], max: usize) -> usize {
    let max = max.min(a.len()).min(b.len());
    common(max, |i, n| {
        a[a.len() - i - n..a.len() - i] == b[b.len() - i - n..b.len() - i]
    })
}

/// The length of the common run of at most `max` bytes, `same(i, n)` telling whether the
/// `n` bytes from `i` on agree.
fn common(max: usize, same: impl Fn(usize, usize) -> bool) -> usize {
    const BLOCK: usize = 256;
    let mut i = 0;
    while i + BLOCK <= max && same(i, BLOCK) {
        i += BLOCK;
    }
    while i < max && same(i, 1) {
        i += 1;
    }
    i
}
