//! The README's quick start, run as is with bash against the real gateway: only the line that puts
//! the release binary on PATH is pointed at the binary under test.

use std::process::Command;

use crate::support::{BIN, CliRun, Gateway, repo_root};

/// The bash block between the README's quick-start markers.
fn quickstart_block() -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme
        .find("<!-- quickstart -->")
        .expect("quick-start marker");
    let section = &readme[start..];
    let end = section
        .find("<!-- /quickstart -->")
        .expect("quick-start end marker");
    let section = &section[..end];
    let code_start = section.find("```bash\n").expect("a bash block") + "```bash\n".len();
    let code_end = section[code_start..].find("```").unwrap();
    section[code_start..code_start + code_end].to_owned()
}

#[tokio::test]
async fn the_readme_quick_start_runs_as_written() {
    if Command::new("curl").arg("--version").output().is_err() {
        panic!("the quick start uses curl; install it to run this test");
    }
    let gateway = Gateway::start().await;

    let block = quickstart_block();
    let release_path = "export PATH=\"$PWD/target/release:$PATH\"";
    assert!(block.contains(release_path), "{block}");
    let bin_dir = std::path::Path::new(BIN).parent().unwrap();
    let script = block.replace(
        release_path,
        &format!("export PATH=\"{}:$PATH\"", bin_dir.display()),
    );

    let mut command = Command::new("bash");
    command
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(repo_root());
    let data_dir = gateway.data_dir();
    let run = CliRun::run_with_env(
        command,
        &[
            ("MESHGUARD_URL", gateway.url.as_str()),
            ("MESHGUARD_HOME", data_dir.to_str().unwrap()),
        ],
    );
    run.assert_code(0);

    // The checks answered as the guide says: browse allowed, shell denied by the deny rule.
    assert!(
        run.stdout.contains(r#""decision":"allow""#),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Action 'execute:shell' denied by rule 'rule-4' of policy 'autogpt-policy'"),
        "{}",
        run.stdout
    );
    // The trace shows both checks, and the revoked agent's last request got 401.
    assert!(run.stdout.contains("execute:shell"), "{}", run.stdout);
    assert_eq!(run.stdout.lines().last(), Some("401"), "{}", run.stdout);
}
