//! Static checks of the deployment files no test would otherwise run: the Kubernetes
//! manifests in docs/deploy/ and the image's HEALTHCHECK. They are parsed (YAML) and held
//! to what the service needs: probes on the right paths and port, the variables the
//! binary reads, selectors that match, a non-root read-only container.

use clap::CommandFactory;
use flagd_redis_sync::cli::Cli;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Every YAML document in docs/deploy/, with the file it came from.
fn manifests() -> Vec<(String, Value)> {
    let dir = root().join("docs/deploy");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("docs/deploy/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        for d in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(d)
                .unwrap_or_else(|e| panic!("{name}: not valid YAML: {e}"));
            if !v.is_null() {
                docs.push((name.clone(), v));
            }
        }
    }
    docs
}

fn one<'a>(docs: &'a [(String, Value)], file: &str, kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|(f, v)| f == file && v["kind"] == kind)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(found.len(), 1, "{file}: expected one {kind}");
    found[0]
}

/// The environment variables the binary reads: clap's, plus RUST_LOG and OTEL_*.
fn known_env() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for a in cmd.get_arguments() {
            if let Some(e) = a.get_env() {
                out.insert(e.to_string_lossy().into_owned());
            }
        }
        for s in cmd.get_subcommands() {
            walk(s, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&Cli::command(), &mut out);
    out.insert("RUST_LOG".into());
    out.insert("REDIS_PASSWORD".into());
    out
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| &labels[k] == v))
}

#[test]
fn every_manifest_parses_and_names_itself() {
    for (file, v) in manifests() {
        for field in ["apiVersion", "kind"] {
            assert!(v[field].is_string(), "{file}: no {field}");
        }
        if v["kind"] != "Kustomization" {
            assert!(
                v["metadata"]["name"].is_string(),
                "{file}: no metadata.name"
            );
        }
    }
}

#[test]
fn the_deployment_probes_runs_locked_down_and_reads_only_known_variables() {
    let docs = manifests();
    let d = one(&docs, "deployment.yaml", "Deployment");
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"];
    assert!(
        labels_match(
            &d["spec"]["selector"]["matchLabels"],
            &pod["metadata"]["labels"]
        ),
        "the selector does not match the pod labels"
    );
    let spec = &pod["spec"];
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    let c = &spec["containers"][0];
    let ports: Vec<(String, u64)> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(ports.contains(&("grpc".into(), 8016)), "{ports:?}");
    assert!(ports.contains(&("http".into(), 8014)), "{ports:?}");
    let port_of = |p: &Value| -> u64 {
        p.as_u64().unwrap_or_else(|| {
            let name = p.as_str().expect("port name or number");
            ports.iter().find(|(n, _)| n == name).expect("named port").1
        })
    };
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(port_of(&get["port"]), 8014, "{probe}");
    }
    for kind in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][res].is_string(),
                "resources.{kind}.{res} missing"
            );
        }
    }
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");

    let known = known_env();
    let env = c["env"].as_array().unwrap();
    for e in env {
        let name = e["name"].as_str().unwrap();
        assert!(
            known.contains(name),
            "{name} is not read by flagd-redis-sync"
        );
    }
    let uri = env
        .iter()
        .find(|e| e["name"] == "REDIS_URI")
        .expect("REDIS_URI");
    assert!(
        uri["valueFrom"]["secretKeyRef"]["name"].is_string(),
        "REDIS_URI must come from a Secret"
    );
    // Every path the service writes is a mounted volume (the root is read-only).
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_array()
        .map(|m| m.iter().filter_map(|v| v["mountPath"].as_str()).collect())
        .unwrap_or_default();
    for e in env {
        if e["name"] == "REDIS_SYNC_SNAPSHOT_PATH" {
            let path = e["value"].as_str().unwrap();
            assert!(
                mounts.iter().any(|m| path.starts_with(&format!("{m}/"))),
                "{path} is not on a mounted volume"
            );
        }
    }
    // The grace period outlasts the service's own shutdown grace.
    let grace: u64 = env
        .iter()
        .find(|e| e["name"] == "REDIS_SYNC_SHUTDOWN_GRACE")
        .and_then(|e| e["value"].as_str()?.parse().ok())
        .unwrap_or(10);
    assert!(spec["terminationGracePeriodSeconds"].as_u64().unwrap() > grace);
}

#[test]
fn the_service_and_budget_select_the_pods() {
    let docs = manifests();
    let d = one(&docs, "deployment.yaml", "Deployment");
    let labels = &d["spec"]["template"]["metadata"]["labels"];
    let s = one(&docs, "service.yaml", "Service");
    assert!(labels_match(&s["spec"]["selector"], labels));
    let ports: Vec<(u64, &str)> = s["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap(),
                p["targetPort"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(ports.contains(&(8016, "grpc")), "{ports:?}");
    assert!(ports.contains(&(8014, "http")), "{ports:?}");
    let pdb = one(&docs, "pdb.yaml", "PodDisruptionBudget");
    assert!(labels_match(
        &pdb["spec"]["selector"]["matchLabels"],
        labels
    ));
    assert!(
        pdb["spec"]["minAvailable"].as_u64().unwrap() < d["spec"]["replicas"].as_u64().unwrap()
    );
    // The Secret the Deployment reads is the one the example shows.
    let secret = one(&docs, "secret.example.yaml", "Secret");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    let r = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "REDIS_URI")
        .unwrap();
    assert_eq!(
        r["valueFrom"]["secretKeyRef"]["name"],
        secret["metadata"]["name"]
    );
    let key = r["valueFrom"]["secretKeyRef"]["key"].as_str().unwrap();
    let example = secret["stringData"][key].as_str().expect("the example URI");
    flagd_redis_sync::redis::RedisTarget::parse(example).expect("the example URI parses");
}

#[test]
fn kustomization_lists_existing_files_and_not_the_examples() {
    let docs = manifests();
    let k = one(&docs, "kustomization.yaml", "Kustomization");
    let resources: Vec<&str> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for r in &resources {
        assert!(root().join("docs/deploy").join(r).is_file(), "{r} missing");
        assert!(!r.contains("example"), "{r}: examples are not applied");
    }
    for want in ["deployment.yaml", "service.yaml", "pdb.yaml"] {
        assert!(
            resources.contains(&want),
            "{want} not in kustomization.yaml"
        );
    }
}

#[test]
fn the_image_healthcheck_runs_a_real_subcommand_in_exec_form() {
    let text = std::fs::read_to_string(root().join("compose/Dockerfile")).unwrap();
    let joined = text.replace("\\\n", " ");
    let line = joined
        .lines()
        .find(|l| l.starts_with("HEALTHCHECK"))
        .expect("compose/Dockerfile has a HEALTHCHECK");
    let json = line
        .split_once("CMD")
        .map(|(_, j)| j.trim())
        .expect("HEALTHCHECK ... CMD [...]");
    // Exec form: the distroless image has no shell.
    let argv: Vec<String> = serde_json::from_str(json).expect("CMD in exec (JSON) form");
    assert_eq!(argv[0], "/usr/local/bin/flagd-redis-sync");
    let mut full = vec!["flagd-redis-sync".to_string()];
    full.extend(argv[1..].iter().cloned());
    let parsed = Cli::command().try_get_matches_from(&full);
    assert!(parsed.is_ok(), "{argv:?}: {:?}", parsed.err());
    assert_eq!(argv[1], "healthcheck");
}

#[test]
fn the_compose_healthcheck_runs_a_real_subcommand() {
    let text = std::fs::read_to_string(root().join("compose/docker-compose.yml")).unwrap();
    let compose: Value = serde_yaml_ng::from_str(&text).expect("compose file is YAML");
    let test = &compose["services"]["flagd-redis-sync"]["healthcheck"]["test"];
    let argv: Vec<String> = serde_json::from_value(test.clone()).expect("test: [CMD, ...]");
    assert_eq!(argv[0], "CMD", "exec form: the image has no shell");
    assert_eq!(argv[1], "/usr/local/bin/flagd-redis-sync");
    let mut full = vec!["flagd-redis-sync".to_string()];
    full.extend(argv[2..].iter().cloned());
    let parsed = Cli::command().try_get_matches_from(&full);
    assert!(parsed.is_ok(), "{argv:?}: {:?}", parsed.err());
    assert_eq!(argv[2], "healthcheck");
}
