//! `notify-keyspace-events`: which letters the watcher needs, and how to add them.
//!
//! Needed: `K` (keyspace channel) with `g` (DEL, RENAME, EXPIRE…), `$` (string writes),
//! `x` (expired) and `e` (evicted), plus `h` (hash writes) when a source is a hash. The
//! letters already set are kept (other consumers rely on them); only missing ones are
//! added. `A` stands for every class.
//!
//! Wanted too, not needed: `lshzt` (list, set, hash, sorted set and stream writes), so a
//! flag key deleted and recreated as another type (`LPUSH`, `SADD`, `HSET`, `XADD`…) is
//! noticed at the event rather than at the next poll (issue 17). Without them the poll
//! still finds it, so a refused CONFIG SET of these letters alone is not a warning.

pub const NEEDED: &str = "Kg$xe";
/// Also needed when a source is stored as a hash.
pub const NEEDED_HASH: &str = "Kg$xeh";
/// Wanted on top of the needed letters: the writes that create a key of another type.
/// (`d`, module types, is left out: Redis < 7 refuses the letter and the whole SET.)
pub const TYPE_CHANGES: &str = "lshzt";
const CLASSES_IN_A: &str = "g$lshzxetd";

/// The letters to set so that `current` covers `NEEDED`, or `None` if it already does.
pub fn merged(current: &str) -> Option<String> {
    merged_with(current, NEEDED)
}

/// The letters to set so that `current` covers `needed`, or `None` if it already does.
pub fn merged_with(current: &str, needed: &str) -> Option<String> {
    let has = |c: char| current.contains(c) || (current.contains('A') && CLASSES_IN_A.contains(c));
    let missing: String = needed.chars().filter(|c| !has(*c)).collect();
    (!missing.is_empty()).then(|| format!("{current}{missing}"))
}

#[cfg(test)]
mod tests {
    use super::{merged, merged_with, NEEDED, TYPE_CHANGES};

    #[test]
    fn merges_without_dropping_letters() {
        assert_eq!(merged("").as_deref(), Some("Kg$xe"));
        assert_eq!(merged("KEA"), None);
        assert_eq!(merged("AK"), None);
        assert_eq!(merged("Ex").as_deref(), Some("ExKg$e"));
        assert_eq!(merged("K$").as_deref(), Some("K$gxe"));
        assert_eq!(merged("Kg$xe"), None);
        let wanted = format!("{NEEDED}{TYPE_CHANGES}");
        assert_eq!(merged_with("KEA", &wanted), None);
        assert_eq!(merged_with("Kg$xe", &wanted).as_deref(), Some("Kg$xelshzt"));
        assert_eq!(
            merged_with("Kg$xeh", &wanted).as_deref(),
            Some("Kg$xehlszt")
        );
    }
}
