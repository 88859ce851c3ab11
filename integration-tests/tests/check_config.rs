//! `chorus check-config FILE`, run as the real binary: every problem of an
//! invalid file is printed with its key path and the exit status is non-zero;
//! a valid file prints "configuration OK" and exits 0. Environment overrides
//! (CHORUS__SECTION__KEY) are checked too.

use integration_tests::*;
use std::path::PathBuf;

/// A scratch directory for this test's files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Scratch {
        let dir = tests_root().join(format!("check-config-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const VALID: &str = r#"
[listen]
postgres = "127.0.0.1:6432"

[limits]
max_client_connections = 10

[health]
interval = "200ms"

[[nodes]]
name = "leader"
role = "leader"
host = "127.0.0.1"
port = 5433
user = "postgres"
password = "secret"

[[nodes]]
name = "follower1"
role = "follower"
host = "127.0.0.1"
port = 5434
user = "postgres"

[[users]]
name = "app"
password = "app-password"

[[users]]
name = "local"
auth = "trust"
"#;

fn output(o: &CommandOutput) -> String {
    format!("{}{}", o.stdout, o.stderr)
}

#[test]
fn a_valid_file_is_ok() {
    let dir = Scratch::new("valid");
    let out = run_chorus(&["check-config", &dir.file("ok.toml", VALID)], &[]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), "configuration OK", "{out:?}");
}

#[test]
fn every_problem_is_reported_with_its_key_path() {
    let dir = Scratch::new("invalid");
    // No leader, a duplicate node name, a user without a password, two bad
    // ports (0 and out of range), an empty host, a zero interval.
    let bad = VALID
        .replace("role = \"leader\"", "role = \"follower\"")
        .replace("name = \"follower1\"", "name = \"leader\"")
        .replace("port = 5433", "port = 0")
        .replace("port = 5434", "port = 70000")
        .replace("name = \"app\"\npassword = \"app-password\"", "name = \"app\"")
        .replace("host = \"127.0.0.1\"\nport = 0", "host = \"\"\nport = 0")
        .replace("interval = \"200ms\"", "interval = \"0s\"");
    let out = run_chorus(&["check-config", &dir.file("bad.toml", &bad)], &[]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out:?}");
    let text = output(&out);
    let expected = [
        "nodes: exactly one node must have role = \"leader\", found 0",
        "nodes[0].name: duplicate node name \"leader\"",
        "nodes[1].name: duplicate node name \"leader\"",
        "nodes[0].host: must not be empty",
        "nodes[0].port: must be between 1 and 65535",
        "nodes[1].port: must be between 1 and 65535",
        "users[0].password: required for auth = \"scram-sha-256\"",
        "health.interval: must be greater than zero",
    ];
    for line in expected {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(!text.contains("configuration OK"), "{text}");
    // One line per problem, nothing else listed.
    let listed = text.lines().filter(|l| l.trim_start().starts_with("- ")).count();
    assert_eq!(listed, expected.len(), "{text}");
}

#[test]
fn load_errors_name_the_key_and_fail() {
    let dir = Scratch::new("load");
    let cases = [
        // (file text, what the message must mention)
        (VALID.replace("max_client_connections", "max_clients"), "max_clients"),
        (VALID.replace("role = \"leader\"", "role = \"boss\""), "boss"),
        (VALID.replace("interval = \"200ms\"", "interval = \"soon\""), "interval"),
        ("[[nodes]\nname = ".to_string(), "bad.toml"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let out = run_chorus(&["check-config", &dir.file("bad.toml", text)], &[]);
        assert_eq!(out.status.and_then(|s| s.code()), Some(1), "case {i}: {out:?}");
        assert!(output(&out).contains(needle), "case {i}: {needle:?} not in {out:?}");
        assert!(!output(&out).contains("configuration OK"));
    }
    let missing = dir.0.join("does-not-exist.toml").display().to_string();
    let out = run_chorus(&["check-config", &missing], &[]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out:?}");
    assert!(output(&out).contains("does-not-exist.toml"), "{out:?}");
}

#[test]
fn environment_overrides_are_checked_too() {
    let dir = Scratch::new("env");
    let file = dir.file("ok.toml", VALID);
    let out = run_chorus(&["check-config", &file], &[("CHORUS__LIMITS__MAX_CLIENT_CONNECTIONS", "0")]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out:?}");
    assert!(output(&out).contains("limits.max_client_connections: must be at least 1"), "{out:?}");
    let out = run_chorus(&["check-config", &file], &[("CHORUS__LIMITS__MAX_CLIENT_CONNECTIONS", "50")]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), "configuration OK");
}

#[test]
fn policy_files_are_checked_relative_to_the_config_file() {
    let scratch = Scratch::new("policies");
    std::fs::create_dir_all(scratch.0.join("rules")).unwrap();
    scratch.file(
        "rules/10-ok.toml",
        "[[rule]]\nname = \"fresh\"\ntables = [\"billing.*\"]\nconsistency = [\"leader\"]\nprefer = [\"follower1\"]\n",
    );
    let config =
        scratch.file("chorus.toml", &format!("{VALID}\n[policies]\ndir = \"rules\"\n[reads]\nwait = \"50ms\"\n"));
    let o = run_chorus(&["check-config", &config], &[]);
    assert!(o.success(), "{}", output(&o));

    scratch
        .file("rules/20-bad.toml", "[[rule]]\nname = \"fresh\"\nconsistency = [\"bounded\"]\nprefer = [\"leader\"]\n");
    scratch.file("rules/30-worse.toml", "[[rule]]\nname = \"x\"\nstatement = \"[\"\n");
    let o = run_chorus(&["check-config", &config], &[]);
    assert!(!o.success(), "{}", output(&o));
    let text = output(&o);
    for needle in [
        "20-bad.toml: rule[0]: another rule is already named \"fresh\"",
        "20-bad.toml: rule[0] (\"fresh\"): consistency: \"bounded\" needs max_lag and/or max_lag_txns",
        "20-bad.toml: rule[0] (\"fresh\"): prefer: no follower named \"leader\"",
        "30-worse.toml: rule[0] (\"x\"): statement: invalid regular expression",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    // The repository's example policies are valid against any nodes.
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let config =
        scratch.file("examples.toml", &format!("{VALID}\n[policies]\ndir = {:?}\n", examples.display().to_string()));
    let o = run_chorus(&["check-config", &config], &[]);
    assert!(o.success(), "{}", output(&o));
}
