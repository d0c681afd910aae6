//! Checks the module layering the architecture promises (docs/architecture.md): no
//! import circle among the crate's top-level modules, none among the files of one
//! folder module, and the bottom layers (`redis/`, `flags.rs`) import nothing else from
//! the crate. It reads the sources (`crate::…` and `super::…` paths outside the test
//! modules), so a new circle fails `cargo test` with the path that closes it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules at the bottom: they may name only themselves and the leaf utilities.
const BOTTOM: [&str; 2] = ["redis", "flags"];
/// Leaf utilities below everything (bounded file reads): they name nothing in the crate.
const LEAVES: [&str; 1] = ["files"];

/// `(module path, source without its test modules)` for every file under `src/`,
/// `main.rs` and `lib.rs` aside. `src/a/b.rs` is `a::b`, `src/a/mod.rs` is `a`.
fn sources() -> Vec<(Vec<String>, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("reading src/") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(&root).ok()?.with_extension("");
            let mut module: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            if module == ["main"] || module == ["lib"] {
                return None;
            }
            let text = std::fs::read_to_string(&path).ok()?;
            let code = match text.find("#[cfg(test)]\nmod ") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            Some((module, code))
        })
        .collect()
}

/// The first path segments after each `crate::` or `super::` (braced groups too), as
/// absolute module paths of at most `depth + 1` segments.
fn references(module: &[String], code: &str) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    for (prefix, base) in [
        ("crate::", Vec::new()),
        ("super::", module[..module.len() - 1].to_vec()),
    ] {
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end]
                    .split(',')
                    .map(|part| part.trim().split("::").next().unwrap_or(""))
                    .collect()
            } else {
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                vec![&rest[..end]]
            };
            for name in names.into_iter().filter(|n| !n.is_empty() && *n != "self") {
                let mut target = base.clone();
                target.push(name.to_string());
                out.insert(target);
            }
        }
    }
    out
}

/// A circle in `edges`, if any, as the path that closes it.
fn circle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut path = stack[i..].to_vec();
            path.push(n.to_string());
            return Some(path);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(path) = visit(m, edges, stack, done) {
                return Some(path);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

#[test]
fn no_import_circles_and_the_bottom_layers_import_nothing_above() {
    let files = sources();
    let top: BTreeSet<String> = files.iter().map(|(m, _)| m[0].clone()).collect();
    // Top-level modules, and the files of each folder module among themselves.
    let mut crate_edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut folder_edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (module, code) in &files {
        for target in references(module, code) {
            let (from, to) = (&module[0], &target[0]);
            if top.contains(to) && from != to {
                crate_edges
                    .entry(from.clone())
                    .or_default()
                    .insert(to.clone());
                assert!(
                    !LEAVES.contains(&from.as_str()),
                    "{} is a leaf utility but names crate::{to}",
                    module.join("::")
                );
                assert!(
                    !BOTTOM.contains(&from.as_str()) || LEAVES.contains(&to.as_str()),
                    "{} is a bottom layer but names crate::{to}",
                    module.join("::")
                );
            }
            // Siblings in one folder: `a::b` naming `a::c` (not the folder's own mod.rs).
            if module.len() == 2
                && target.len() == 2
                && target[0] == module[0]
                && target[1] != module[1]
            {
                folder_edges
                    .entry(module[0].clone())
                    .or_default()
                    .entry(module[1].clone())
                    .or_default()
                    .insert(target[1].clone());
            }
        }
    }
    assert!(
        crate_edges.contains_key("source"),
        "the reader found no imports"
    );
    if let Some(path) = circle(&crate_edges) {
        panic!("import circle among modules: {}", path.join(" -> "));
    }
    for (folder, edges) in &folder_edges {
        if let Some(path) = circle(edges) {
            panic!("import circle in {folder}/: {}", path.join(" -> "));
        }
    }
}

#[test]
fn the_circle_finder_finds_a_circle() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    assert_eq!(circle(&edges), None);
    edges.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        circle(&edges).map(|p| p.join(" -> ")).as_deref(),
        Some("a -> b -> c -> a")
    );
    let refs = references(
        &["doctor".into(), "key".into()],
        "use super::{helpers::reason, limits};\nuse crate::redis::codes;",
    );
    let refs: Vec<String> = refs.iter().map(|r| r.join("::")).collect();
    assert_eq!(refs, ["doctor::helpers", "doctor::limits", "redis"]);
}
