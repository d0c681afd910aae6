//! Start-up configuration errors: non-zero exit, one clear line, no secrets.

use integration::binary;
use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(binary())
        .args(args)
        .env_remove("REDIS_URI")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn bad_configuration_exits_non_zero_with_one_clear_line() {
    for (args, want) in [
        (
            vec!["--redis-uri", "redis://u:hunter2@localhost:6379/0"],
            "no key",
        ),
        (
            vec!["--redis-uri", "http://u:hunter2@localhost/?key=f"],
            "unsupported scheme",
        ),
        (
            vec!["--redis-uri", "redis://u:hunter2@localhost:70000/0?key=f"],
            "not a valid URI",
        ),
        (
            vec![
                "--redis-uri",
                "redis://localhost/0?key=f",
                "--redis-sync-cert-path",
                "/nonexistent/c.pem",
                "--redis-sync-key-path",
                "/nonexistent/k.pem",
            ],
            "cannot read /nonexistent/c.pem",
        ),
    ] {
        let (code, text) = run(&args);
        assert_eq!(code, 64, "{args:?}: {text}");
        assert!(text.contains(want), "{args:?}: {text}");
        assert!(
            !text.contains("hunter2"),
            "{args:?} leaked the password: {text}"
        );
        assert_eq!(text.trim().lines().count(), 1, "{args:?}: {text}");
    }
}

#[test]
fn clap_errors_exit_non_zero() {
    let (code, text) = run(&[
        "--redis-uri",
        "redis://h/0?key=f",
        "--redis-sync-port",
        "99999",
    ]);
    assert_ne!(code, 0);
    assert!(text.contains("--redis-sync-port"), "{text}");
    let (code, text) = run(&[]);
    assert_ne!(code, 0);
    assert!(text.contains("--redis-uri"), "{text}");
}

#[test]
fn help_and_version() {
    let (code, text) = run(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--redis-uri",
        "--redis-interval",
        "--redis-sync-port",
        "--redis-sync-cert-path",
        "--redis-sync-key-path",
        "--redis-sync-socket-path",
        "--redis-log-format",
        "--debug",
        "--management-port",
        "[env: REDIS_URI",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
    let (code, text) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(text.starts_with("flagd-redis-sync "), "{text}");
}
