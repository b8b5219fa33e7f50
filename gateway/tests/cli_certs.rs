//! `fedx certs` as an administrator uses it: the real binary, its tables and its error messages.

use std::path::Path;
use std::process::{Command, Output};

struct Fedx {
    dir: tempfile::TempDir,
}

impl Fedx {
    fn new() -> Fedx {
        Fedx { dir: tempfile::tempdir().expect("temp dir") }
    }

    fn run(&self, args: &[&str]) -> Output {
        let root: &Path = self.dir.path();
        Command::new(env!("CARGO_BIN_EXE_fedx"))
            .arg("--data-dir")
            .arg(root.join("data"))
            .arg("--pki-dir")
            .arg(root.join("pki"))
            .args(args)
            .env_remove("FEDX_CONFIG")
            .env_remove("FEDX_DATABASE_URL")
            .env("FEDX_LOG", "warn")
            .output()
            .expect("fedx runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "fedx {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "fedx {args:?} should fail");
        String::from_utf8(out.stderr).expect("utf-8 output")
    }
}

fn serial_of(issue_output: &str) -> String {
    issue_output
        .lines()
        .find_map(|l| l.strip_prefix("issued"))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("issue prints the serial")
        .to_owned()
}

#[test]
fn issue_list_revoke_renew_as_an_administrator() {
    let fedx = Fedx::new();
    let missing = fedx.fails(&["certs", "issue", "--dept", "tax", "--role", "consumer"]);
    assert!(missing.contains("fedx certs init"), "missing CA must say how to fix it: {missing}");

    fedx.ok(&["certs", "init"]);
    let again = fedx.fails(&["certs", "init"]);
    assert!(again.contains("already exists"), "{again}");
    assert!(fedx.dir.path().join("pki/ca.crl.pem").exists());

    let serial =
        serial_of(&fedx.ok(&["certs", "issue", "--dept", "tax", "--role", "consumer", "--days", "30"]));
    let key = fedx.dir.path().join(format!("pki/issued/tax-consumer-{serial}.key.pem"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).expect("key written").permissions().mode() & 0o777, 0o600);
    }

    let table = fedx.ok(&["certs", "list"]);
    for column in ["serial", "department", "role", "not after", "status"] {
        assert!(table.contains(column), "{table}");
    }
    let row = table.lines().find(|l| l.contains(&serial)).expect("issued certificate listed");
    assert!(row.contains("tax") && row.contains("consumer") && row.contains("valid"), "{row}");

    let bad_role = fedx.fails(&["certs", "issue", "--dept", "tax", "--role", "admin"]);
    assert!(bad_role.contains("may not hold role"), "{bad_role}");
    let bad_dept = fedx.fails(&["certs", "issue", "--dept", "mars", "--role", "consumer"]);
    assert!(bad_dept.contains("not in the department registry"), "{bad_dept}");

    let renewed = serial_of(&fedx.ok(&["certs", "renew", "--serial", &serial]));
    assert_ne!(renewed, serial);

    let crl_before = std::fs::read(fedx.dir.path().join("pki/ca.crl.pem")).expect("crl");
    fedx.ok(&["certs", "revoke", "--serial", &serial, "--reason", "superseded"]);
    let crl_after = std::fs::read(fedx.dir.path().join("pki/ca.crl.pem")).expect("crl");
    assert_ne!(crl_before, crl_after, "revoking rewrites the CRL");

    let twice = fedx.fails(&["certs", "revoke", "--serial", &serial, "--reason", "superseded"]);
    assert!(twice.contains("already revoked"), "{twice}");
    let unknown = fedx.fails(&["certs", "revoke", "--serial", "deadbeef", "--reason", "superseded"]);
    assert!(unknown.contains("no certificate with serial deadbeef"), "{unknown}");
    let bad_reason = fedx.fails(&["certs", "revoke", "--serial", &renewed, "--reason", "bored"]);
    assert!(bad_reason.contains("unknown revocation reason"), "{bad_reason}");
    let renew_revoked = fedx.fails(&["certs", "renew", "--serial", &serial]);
    assert!(renew_revoked.contains("revoked"), "{renew_revoked}");

    let json: serde_json::Value =
        serde_json::from_str(&fedx.ok(&["certs", "list", "--format", "json"])).expect("json");
    let revoked =
        json.as_array().expect("array").iter().find(|c| c["serial"] == serial.as_str()).expect("listed");
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revocation_reason"], "superseded");
}

#[test]
fn every_command_has_help() {
    let fedx = Fedx::new();
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["demo", "--help"],
        vec!["certs", "--help"],
        vec!["certs", "init", "--help"],
        vec!["certs", "issue", "--help"],
        vec!["certs", "list", "--help"],
        vec!["certs", "revoke", "--help"],
        vec!["certs", "renew", "--help"],
        vec!["certs", "crl", "--help"],
        vec!["config", "check", "--help"],
        vec!["db", "migrate", "--help"],
        vec!["sources", "--help"],
        vec!["sources", "seed", "--help"],
        vec!["sources", "import", "--help"],
    ] {
        let out = fedx.ok(&args);
        assert!(out.contains("Usage:"), "fedx {args:?} --help: {out}");
    }
}
