//! `docs/configuration.md`, generated from the clap definition so it cannot drift: a unit
//! test renders it and fails when the file differs (`make docs` rewrites it).

use clap::{Arg, Command};

/// The whole reference page for a command and its subcommands.
pub fn render(cmd: &Command) -> String {
    let name = cmd.get_name();
    let mut out = String::new();
    out.push_str("# Configuration reference\n\n");
    out.push_str(
        "<!-- Generated from the command-line definition (src/config.rs, src/tools/). Do not \
         edit by hand: run `make docs` (UPDATE_DOCS=1 cargo test -p flagd-redis-sync --lib \
         configuration_reference). -->\n\n",
    );
    out.push_str(
        "Every option of the service is a flag and an environment variable; the command line \
         wins over the environment. Options whose name starts with `redis-` keep their name as \
         the variable (`--redis-uri` -> `REDIS_URI`), the others get a `REDIS_SYNC_` prefix \
         (`--management-port` -> `REDIS_SYNC_MANAGEMENT_PORT`). Boolean flags take no value; \
         as variables they accept `true` or `false`. The service also reads `RUST_LOG` (log \
         filter, wins over `--debug`) and the standard `OTEL_*` variables (see \
         [runbook.md](runbook.md#opentelemetry)).\n\n",
    );
    out.push_str(&format!("## `{name}` (the service)\n\n"));
    if let Some(about) = cmd.get_about() {
        out.push_str(&format!("{}.\n\n", one_line(&about.to_string())));
    }
    out.push_str(&table(cmd));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        out.push_str(&format!("\n## `{name} {}`\n\n", sub.get_name()));
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            out.push_str(&format!("{}.\n\n", one_line(&about.to_string())));
        }
        out.push_str(&table(sub));
    }
    out
}

fn table(cmd: &Command) -> String {
    let mut out =
        String::from("| option | environment | default | description |\n|---|---|---|---|\n");
    for arg in cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version"))
    {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            usage(arg),
            arg.get_env()
                .map_or(String::new(), |e| format!("`{}`", e.to_string_lossy())),
            default(arg),
            description(arg),
        ));
    }
    out
}

fn value_name(arg: &Arg) -> String {
    arg.get_value_names()
        .and_then(|v| v.first())
        .map_or_else(|| arg.get_id().as_str().to_uppercase(), |s| s.to_string())
}

fn usage(arg: &Arg) -> String {
    let takes = arg.get_action().takes_values();
    let multiple = matches!(arg.get_action(), clap::ArgAction::Append);
    let dots = if multiple { "..." } else { "" };
    match arg.get_long() {
        Some(long) if takes => format!("`--{long} <{}>`{dots}", value_name(arg)),
        Some(long) => format!("`--{long}`"),
        None => format!("`{}`{dots}", value_name(arg)),
    }
}

fn default(arg: &Arg) -> String {
    if arg.is_required_set() {
        return "required".into();
    }
    if !arg.get_action().takes_values() {
        return "off".into();
    }
    let d: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| match v.to_string_lossy() {
            v if v.is_empty() => "(empty)".to_string(),
            v => format!("`{v}`"),
        })
        .collect();
    d.join(", ")
}

fn description(arg: &Arg) -> String {
    let mut text = arg
        .get_long_help()
        .or(arg.get_help())
        .map(|h| one_line(&h.to_string()))
        .unwrap_or_default();
    if !text.is_empty() && !text.ends_with(['.', ')']) {
        text.push('.');
    }
    if arg.get_action().takes_values() {
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| format!("`{}`", v.get_name()))
            .collect();
        if !values.is_empty() {
            text.push_str(&format!(" One of: {}.", values.join(", ")));
        }
    }
    if let Some(d) = arg.get_value_delimiter() {
        text.push_str(&format!(" The variable takes a `{d}`-separated list."));
    }
    text
}

/// Help text as one table cell: paragraphs joined, pipes escaped.
fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn configuration_reference() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
        let want = render(&crate::cli::Cli::command());
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&path, &want).expect("writing docs/configuration.md");
            return;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            let first = have
                .lines()
                .zip(want.lines())
                .position(|(a, b)| a != b)
                .map_or_else(|| "length".to_string(), |i| format!("line {}", i + 1));
            panic!(
                "docs/configuration.md is out of date with the command line (first difference: \
                 {first}); regenerate it with `make docs` or \
                 `UPDATE_DOCS=1 cargo test -p flagd-redis-sync --lib configuration_reference`"
            );
        }
    }

    #[test]
    fn every_service_option_is_documented_with_its_variable() {
        let doc = render(&crate::cli::Cli::command());
        for arg in crate::cli::Cli::command().get_arguments() {
            if let Some(long) = arg.get_long() {
                assert!(doc.contains(&format!("`--{long}")), "--{long} missing");
                assert!(
                    arg.get_env().is_some(),
                    "--{long} has no environment variable"
                );
            }
        }
    }
}
