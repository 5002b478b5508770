//! `meshguard completions`, `meshguard man` and `meshguard doctor` as an operator runs them.

use std::os::unix::fs::PermissionsExt as _;

use crate::support::{CliRun, Gateway};

#[test]
fn completion_scripts_are_generated_for_every_shell() {
    for (shell, marker) in [
        ("bash", "_meshguard()"),
        ("zsh", "#compdef meshguard"),
        ("fish", "complete -c meshguard"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let run = CliRun::bare(&["completions", shell]);
        run.assert_code(0);
        assert!(
            run.stdout.contains(marker),
            "{shell}: {}",
            &run.stdout[..200.min(run.stdout.len())]
        );
        assert!(
            run.stdout.contains("replay"),
            "{shell} completes `policy replay`"
        );
    }
    let run = CliRun::bare(&["completions", "tcsh"]);
    assert_eq!(run.code, 2, "an unknown shell is a usage error");
}

#[test]
fn a_reader_that_stops_early_ends_the_completions_quietly() {
    use std::io::Read as _;
    // `meshguard completions bash | head -1`: the pipe closes long before the script is written.
    let mut child = std::process::Command::new(crate::support::BIN)
        .args(["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0_u8; 16];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn manual_pages_are_written_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let run = CliRun::bare(&["man", "--dir", dir.path().to_str().unwrap()]);
    run.assert_code(0);
    for page in [
        "meshguard.1",
        "meshguard-serve.1",
        "meshguard-policy-replay.1",
        "meshguard-doctor.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page} is a man page");
    }
    let printed = CliRun::bare(&["man"]);
    printed.assert_code(0);
    assert!(
        printed.stdout.contains(".SH SUBCOMMANDS") || printed.stdout.contains(".SH COMMANDS"),
        "{}",
        &printed.stdout[..300.min(printed.stdout.len())]
    );
}

#[tokio::test]
async fn doctor_finds_a_readable_key_and_says_what_to_do() {
    let gw = Gateway::start().await;
    let healthy = gw.cli(&["doctor"]);
    healthy.assert_code(0);
    assert!(healthy.stdout.contains("store"), "{}", healthy.stdout);
    assert!(healthy.stdout.contains("clock"), "{}", healthy.stdout);

    let key = gw.data_dir().join("signing-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let sick = gw.cli(&["--json", "doctor"]);
    sick.assert_code(1);
    let report: serde_json::Value = serde_json::from_str(&sick.stdout).unwrap();
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "signing key")
        .unwrap();
    assert_eq!(finding["level"], "fail");
    assert_eq!(
        finding["fix"],
        format!("chmod 600 {}", key.display()),
        "{}",
        sick.stdout
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Without a gateway the local checks still run, and the missing gateway is a warning.
    let data_dir = gw.data_dir();
    let elsewhere = CliRun::bare(&[
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--url",
        "http://127.0.0.1:9",
        "doctor",
    ]);
    elsewhere.assert_code(0);
    assert!(
        elsewhere
            .stdout
            .contains("no answer from http://127.0.0.1:9"),
        "{}",
        elsewhere.stdout
    );
}
