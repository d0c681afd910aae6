//! Flag documents as teams write them, generated for the benchmarks and the timing of
//! validation: boolean variants, a targeting rule nesting `if` / `in` / `ends_with` /
//! `fractional` (bucketed on a `cat` key) / `sem_ver`, and flag metadata (owner, ticket).
//! 25 flags make about 10 KB, 250 about 100 KB, 2,500 about 1 MB.
//!
//! The first flag (in key order) is `bench-marker`, whose string variant carries a
//! marker number, so a client can tell documents apart from the first bytes of a message;
//! changing the marker is a change to one flag.

use std::fmt::Write as _;

/// The marker flag's name: it sorts before every generated flag (`ff-…`).
pub const MARKER_FLAG: &str = "bench-marker";

/// One generated flag, `i` picking its team, rule values and rollout.
pub fn flag(i: usize) -> String {
    let teams = [
        "checkout", "search", "growth", "platform", "payments", "mobile",
    ];
    let team = teams[i % teams.len()];
    format!(
        concat!(
            r#"{{"state":"ENABLED","defaultVariant":"off","variants":{{"on":true,"off":false}},"#,
            r#""targeting":{{"if":["#,
            r#"{{"in":[{{"var":"country"}},["de","fr","nl","se-{i}"]]}},"on","#,
            r#"{{"if":[{{"ends_with":[{{"var":"email"}},"@{team}.example.com"]}},"on","#,
            r#"{{"if":[{{"sem_ver":[{{"var":"appVersion"}},">=","{major}.{minor}.0"]}},"#,
            r#"{{"fractional":[{{"cat":[{{"var":"$flagd.flagKey"}},{{"var":"userId"}}]}},["on",{pct}],["off",{rest}]]}},"#,
            r#""off"]}}]}}]}},"#,
            r#""metadata":{{"owner":"team-{team}","ticket":"{upper}-{ticket}"}}}}"#
        ),
        i = i,
        team = team,
        major = 1 + i % 4,
        minor = i % 10,
        pct = i % 100,
        rest = 100 - i % 100,
        upper = team.to_uppercase(),
        ticket = 1000 + i,
    )
}

/// A document of `flags` generated flags plus the marker flag carrying `marker`.
pub fn document(flags: usize, marker: u32) -> String {
    let mut s = String::with_capacity(flags * 420 + 256);
    write!(
        s,
        r#"{{"flags":{{"{MARKER_FLAG}":{{"defaultVariant":"v","state":"ENABLED","variants":{{"v":"MARK{marker:09}"}}}}"#
    )
    .expect("writing to a String");
    for i in 0..flags {
        write!(s, r#","ff-{i:05}-{}":{}"#, name(i), flag(i)).expect("writing to a String");
    }
    s.push_str("}}");
    s
}

fn name(i: usize) -> &'static str {
    [
        "new-checkout",
        "dark-mode",
        "search-v2",
        "promo-banner",
        "fast-path",
    ][i % 5]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_documents_are_valid_and_sized_as_documented() {
        let opts = flagd_redis_sync::flags::Options::default();
        for (n, min, max) in [
            (25, 8_000, 14_000),
            (250, 80_000, 130_000),
            (2500, 800_000, 1_300_000),
        ] {
            let text = document(n, 7);
            assert!(
                (min..max).contains(&text.len()),
                "{n} flags: {} bytes",
                text.len()
            );
            let doc = flagd_redis_sync::flags::parse(text.as_bytes(), &opts)
                .unwrap_or_else(|e| panic!("{n} flags: {e}"));
            assert_eq!(doc.flag_count, n + 1);
            assert!(doc.canonical[..200].contains("MARK000000007"));
        }
    }
}
