//! Strict validation end to end: a document a flagd client would choke on, SET in Redis,
//! never reaches the streams; /readyz and the log say why; `validate` names the pointer.
//! (Which documents are refused is tied to the Python provider in compat_python.rs.)

use integration::*;
use std::process::{Command, Stdio};

/// A boolean flag `f` whose rule has a typo in an operator name.
const TYPO: &str = r#"{"flags":{"f":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","targeting":{"if":[{"starts_wiht":[{"var":"email"},"x"]},"on","off"]}}}}"#;

#[tokio::test]
async fn a_document_with_a_bad_rule_is_refused_and_streams_keep_the_last_good_flags() {
    let t = start_server(&doc("good", "one"), &[]).await.unwrap();
    let (redis, svc, mut s, first) = (t.redis, t.svc, t.stream, t.first);
    assert_eq!(default_value(&first, "good").as_deref(), Some("one"));

    redis.set("flags", TYPO).unwrap();
    svc.readyz_until("refused", |_, v| v["key"]["state"] == "refused")
        .await;
    let (_, ready) = svc.readyz().await;
    let reason = ready.to_string();
    assert!(
        reason.contains("/flags/f/targeting/if/0/starts_wiht") && reason.contains("starts_with"),
        "/readyz names the pointer and the fix: {ready}"
    );
    let logs = svc.logs();
    assert!(
        logs.lines().any(|l| l.contains("flag document refused")
            && l.contains("flags")
            && l.contains("starts_wiht")
            && l.contains("/flags/f/targeting/if/0/starts_wiht")),
        "the log names the key, the pointer and the reason:\n{logs}"
    );

    // The next message is the next good document: the refused one was never sent.
    redis.set("flags", &doc("good", "two")).unwrap();
    let next = s.next_json().await.unwrap();
    assert_eq!(default_value(&next, "good").as_deref(), Some("two"));
    assert!(next["flags"].get("f").is_none());
}

#[test]
fn validate_exits_1_with_the_pointer_and_basic_mode_only_warns() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.json");
    std::fs::write(&file, TYPO).unwrap();
    let run = |mode: &str| {
        Command::new(binary())
            .args(["validate", "--validation", mode])
            .arg(&file)
            .stdin(Stdio::null())
            .output()
            .expect("running validate")
    };
    let strict = run("strict");
    let err = String::from_utf8_lossy(&strict.stderr);
    assert_eq!(strict.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refused: /flags/f/targeting/if/0/starts_wiht: flag \"f\": unknown operator \"starts_wiht\" (did you mean \"starts_with\"?)"),
        "{err}"
    );
    let basic = run("basic");
    let err = String::from_utf8_lossy(&basic.stderr);
    assert_eq!(basic.status.code(), Some(0), "{err}");
    assert!(
        err.contains("warning (strict would refuse): /flags/f/targeting/if/0/starts_wiht"),
        "{err}"
    );
}
