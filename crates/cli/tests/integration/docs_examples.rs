//! The configuration shown in docs/operations.md is valid for the real binary.

use crate::support::{CliRun, repo_root};

#[test]
fn the_operations_guide_config_validates() {
    let guide = std::fs::read_to_string(repo_root().join("docs/operations.md")).unwrap();
    let start = guide.find("```toml\n").expect("a TOML example") + "```toml\n".len();
    let length = guide[start..].find("```").unwrap();
    let example = &guide[start..start + length];
    assert!(
        example.contains("policies_dir") && example.contains("[audit]"),
        "{example}"
    );

    // Same file, with the machine-specific paths pointed at this checkout and a temp dir.
    let dir = tempfile::tempdir().unwrap();
    let policies = repo_root().join("examples/policies");
    let config = example
        .replace("/etc/meshguard/policies", policies.to_str().unwrap())
        .replace(
            "/var/lib/meshguard",
            dir.path().join("data").to_str().unwrap(),
        );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    let run = CliRun::bare(&[
        "serve",
        "--validate-only",
        "--config",
        path.to_str().unwrap(),
    ]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("listen: 0.0.0.0:3100"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("policies: 3 file(s)"), "{}", run.stdout);
    assert!(
        !dir.path().join("data").exists(),
        "--validate-only creates nothing"
    );
}
