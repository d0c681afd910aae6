//! `notify-keyspace-events`: which letters the watcher needs, and how to add them.
//!
//! Needed: `K` (keyspace channel) with `g` (DEL, RENAME, EXPIRE…), `$` (string writes),
//! `x` (expired) and `e` (evicted), plus `h` (hash writes) when a source is a hash. The
//! letters already set are kept (other consumers rely on them); only missing ones are
//! added. `A` stands for every class.

pub const NEEDED: &str = "Kg$xe";
/// Also needed when a source is stored as a hash.
pub const NEEDED_HASH: &str = "Kg$xeh";
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
    use super::merged;

    #[test]
    fn merges_without_dropping_letters() {
        assert_eq!(merged("").as_deref(), Some("Kg$xe"));
        assert_eq!(merged("KEA"), None);
        assert_eq!(merged("AK"), None);
        assert_eq!(merged("Ex").as_deref(), Some("ExKg$e"));
        assert_eq!(merged("K$").as_deref(), Some("K$gxe"));
        assert_eq!(merged("Kg$xe"), None);
    }
}
