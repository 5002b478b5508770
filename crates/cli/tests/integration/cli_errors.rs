//! How the CLI fails: one line on stderr, and an exit code a script can branch on.

use crate::support::{CliRun, Gateway, free_port, repo_root};

#[test]
fn an_unreachable_gateway_exits_5_with_one_line() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let run = CliRun::bare(&["--url", &url, "--admin-token", "x", "agent", "list"]);
    run.assert_code(5);
    assert_eq!(
        run.stderr,
        format!("error: cannot reach the gateway at {url}: is `meshguard serve` running?\n")
    );
    assert!(run.stdout.is_empty());

    // The URL also comes from the environment, MESHGUARD_URL first.
    let args = ["--admin-token", "x", "policy", "list"];
    let run = CliRun::with_env(
        &args,
        &[
            ("MESHGUARD_URL", &url),
            ("MESHGUARD_GATEWAY_URL", "http://127.0.0.1:1"),
        ],
    );
    run.assert_code(5);
    assert!(run.stderr.contains(&url), "{}", run.stderr);
    let run = CliRun::with_env(&args, &[("MESHGUARD_GATEWAY_URL", &url)]);
    run.assert_code(5);
    assert!(run.stderr.contains(&url), "{}", run.stderr);
}

#[test]
fn a_missing_admin_token_exits_3() {
    let empty = tempfile::tempdir().unwrap();
    let run = CliRun::bare(&[
        "--url",
        "http://127.0.0.1:9",
        "--data-dir",
        empty.path().to_str().unwrap(),
        "agent",
        "list",
    ]);
    run.assert_code(3);
    assert!(
        run.stderr.starts_with("error: no admin token"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1);
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["agent", "create", "x", "--trust", "godlike"][..],
        &["policy", "test"],
        &["policy", "test", "only-an-agent"],
        &["audit", "tail", "-n", "many"],
        &["audit", "tail", "--decision", "maybe"],
        &["agent", "create", "x", "--ttl", "soon"],
        &["agent", "create", "Bad Name!"],
        &["policy", "test", "a", "read:x", "--context", "novalue"],
        &["frobnicate"],
        &["serve", "--mode", "yolo"],
    ] {
        let run = CliRun::bare(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.starts_with("error:"), "{args:?}: {}", run.stderr);
    }
    let help = CliRun::bare(&["--help"]);
    help.assert_code(0);
    assert!(help.stdout.contains("serve") && help.stdout.contains("policy"));
}

#[test]
fn validate_reports_errors_with_positions_and_lints_offline() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: bad\nversion: \"1\"\nrules:\n  - effect: alow\n    actions: [\"read:*\"]\n",
    )
    .unwrap();
    let run = CliRun::bare(&["policy", "validate", bad.to_str().unwrap()]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains(&format!("{}:4:13: rules[0].effect", bad.display())),
        "{}",
        run.stderr
    );

    let examples = repo_root().join("examples/policies");
    let run = CliRun::bare(&["policy", "validate", examples.to_str().unwrap()]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("autogpt.yaml:") && run.stdout.contains(": warning: "),
        "{}",
        run.stdout
    );
    let files = example_policy_count();
    assert!(
        run.stdout.contains(&format!("{files} policies valid")),
        "{}",
        run.stdout
    );

    let agents = dir.path().join("agents.yaml");
    std::fs::write(
        &agents,
        "agents:\n  crew: {trust: verified, tags: [crewai]}\n",
    )
    .unwrap();
    let run = CliRun::bare(&[
        "policy",
        "validate",
        "--agents",
        agents.to_str().unwrap(),
        examples.join("autogpt.yaml").to_str().unwrap(),
    ]);
    run.assert_code(0);
    assert!(
        run.stdout
            .contains("policy 'autogpt-policy' applies to none of the 1 given agents"),
        "{}",
        run.stdout
    );
}

#[test]
fn validate_reads_yml_files_of_a_directory_and_skips_hidden_files_and_backups() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("short.yml"),
        "name: short\nversion: \"1\"\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n",
    )
    .unwrap();
    // Broken on purpose: read as policies, they would fail the validation.
    std::fs::write(dir.path().join(".#short.yaml"), "rules: [oops\n").unwrap();
    std::fs::write(dir.path().join("short.yml~"), "rules: [oops\n").unwrap();
    let run = CliRun::bare(&["policy", "validate", dir.path().to_str().unwrap()]);
    run.assert_code(0);
    assert!(run.stdout.contains("1 policy valid"), "{}", run.stdout);
}

#[test]
fn validate_strict_refuses_an_allow_that_overrides_another_policys_default_deny() {
    // The shipped examples leave no hole for the fleet they are written for.
    let examples = repo_root().join("examples/policies");
    let fleet = repo_root().join("examples/agents.yaml");
    let run = CliRun::bare(&[
        "policy",
        "validate",
        "--strict",
        "--agents",
        fleet.to_str().unwrap(),
        examples.to_str().unwrap(),
    ]);
    run.assert_code(0);
    assert!(!run.stdout.contains(": error: "), "{}", run.stdout);

    // The production policy as first published: its sandbox-only python rule left
    // `execute:python` to its default deny, which autogpt.yaml's allow overrides.
    let seed = repo_root().join("crates/policy/compare/policies/autogpt-production.yaml");
    let autogpt = examples.join("autogpt.yaml");
    let files = [autogpt.to_str().unwrap(), seed.to_str().unwrap()];
    let run = CliRun::bare(&["policy", "validate", files[0], files[1]]);
    run.assert_code(0);
    assert!(
        run.stdout
            .contains(": warning: policy 'autogpt-production' defaults to deny"),
        "{}",
        run.stdout
    );

    let run = CliRun::bare(&["policy", "validate", "--strict", files[0], files[1]]);
    run.assert_code(1);
    assert!(
        run.stdout.contains(": error: policy 'autogpt-production' defaults to deny, but policy 'autogpt-policy' allows"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("(--strict)"), "{}", run.stderr);

    let run = CliRun::bare(&[
        "--json", "policy", "validate", "--strict", files[0], files[1],
    ]);
    run.assert_code(1);
    let body: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(body["valid"], false);
    assert_eq!(body["errors"][0]["kind"], "default_deny_overridden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_errors_map_to_exit_codes() {
    let gateway = Gateway::start().await;

    // A wrong admin token: exit 3, one line.
    let run = gateway.cli(&["--admin-token", "not-the-token", "agent", "list"]);
    run.assert_code(3);
    assert!(
        run.stderr
            .starts_with("error: the gateway refused the admin token"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);

    // An invalid policy file: exit 1, file:line:col, and nothing applied — not even the valid
    // file of the same directory.
    let dir = gateway.scratch().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        repo_root().join("examples/policies/autogpt.yaml"),
        dir.join("a-good.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.join("b-bad.yaml"),
        "name: broken\nversion: \"1\"\nrules:\n  - effect: deny\n    actions: [\"exec[\"]\n",
    )
    .unwrap();
    let run = gateway.cli(&["policy", "apply", dir.to_str().unwrap()]);
    run.assert_code(1);
    assert!(run.stderr.contains("b-bad.yaml:5:"), "{}", run.stderr);
    assert!(run.stderr.contains("nothing was applied"), "{}", run.stderr);
    let listed = gateway.cli_json(&["policy", "list"]);
    assert_eq!(listed["policies"].as_array().unwrap().len(), 0, "{listed}");

    // Unknown names are errors of the gateway: exit 1 with its message.
    let run = gateway.cli(&["agent", "show", "nobody"]);
    run.assert_code(1);
    assert!(
        run.stderr.starts_with("error: ") && run.stderr.contains("404"),
        "{}",
        run.stderr
    );

    // `policy test` exit codes: 0 allowed, 1 denied, 2 error.
    gateway.create_agent("tester", "verified", "autogpt");
    gateway
        .cli(&[
            "policy",
            "apply",
            repo_root()
                .join("examples/policies/autogpt.yaml")
                .to_str()
                .unwrap(),
        ])
        .assert_code(0);
    gateway
        .cli(&["policy", "test", "tester", "read:notes"])
        .assert_code(0);
    gateway
        .cli(&["policy", "test", "tester", "delete:notes"])
        .assert_code(1);
    gateway
        .cli(&["policy", "test", "nobody", "read:notes"])
        .assert_code(2);
    gateway
        .cli(&[
            "--admin-token",
            "wrong",
            "policy",
            "test",
            "tester",
            "read:notes",
        ])
        .assert_code(2);
    let json = gateway.cli_json(&[
        "policy",
        "test",
        "tester",
        "read:notes",
        "--resource",
        "a.txt",
    ]);
    assert_eq!(json["decision"], "allow", "{json}");
}

#[test]
fn serve_validate_only_checks_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "listen = \"127.0.0.1:3999\"\nmode = \"audit\"\n").unwrap();
    let data = dir.path().join("data");
    let run = CliRun::bare(&[
        "serve",
        "--validate-only",
        "--config",
        good.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("127.0.0.1:3999") && run.stdout.contains("audit"),
        "{}",
        run.stdout
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "lisen = \"127.0.0.1:3999\"\n").unwrap();
    let run = CliRun::bare(&[
        "serve",
        "--validate-only",
        "--config",
        bad.to_str().unwrap(),
    ]);
    run.assert_code(1);
    assert!(run.stderr.contains("lisen"), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}

#[test]
fn serve_validate_only_names_a_bad_trigger_and_a_bad_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("gw.toml");
    let validate = |env: &[(&str, &str)]| CliRun::validate_only(&config, &data, env);

    std::fs::write(&config, "[alerts]\non = [\"deny\", \"denied\"]\n").unwrap();
    let run = validate(&[]);
    run.assert_code(1);
    assert!(
        run.stderr.contains(&format!(
            "{}: `alerts.on`: unknown trigger `denied` (expected one of deny, rate_limit, \
             approval_required, agent_revoked, error)",
            config.display()
        )),
        "{}",
        run.stderr
    );

    std::fs::write(&config, "mode = \"audit\"\n").unwrap();
    let run = validate(&[("ALERT_ON", "deny,revoke")]);
    run.assert_code(1);
    assert!(
        run.stderr.contains(
            "environment variable ALERT_ON: `alerts.on`: unknown trigger `revoke` (expected one of"
        ),
        "{}",
        run.stderr
    );

    let missing = dir.path().join("gw.crt");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            missing.display(),
            dir.path().join("gw.key").display()
        ),
    )
    .unwrap();
    let run = validate(&[]);
    run.assert_code(1);
    assert!(
        run.stderr.contains(&missing.display().to_string()),
        "{}",
        run.stderr
    );
    std::fs::write(&config, "[tls]\ncert = \"gw.crt\"\n").unwrap();
    let run = validate(&[]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("`tls.key`: missing: `tls.cert` is set"),
        "{}",
        run.stderr
    );
    assert!(!data.exists(), "validate-only creates nothing");
}

/// `--data-dir` and `--admin-token` are global flags, but their variables belong to the
/// gateway's environment layer: `MESHGUARD_DATA_DIR` wins over the older `MESHGUARD_HOME`, a flag
/// wins over both, and a bad value is blamed on the variable that gave it.
#[test]
fn serve_reads_data_dir_and_admin_token_variables_below_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (home, data, flag) = (
        dir.path().join("home"),
        dir.path().join("data"),
        dir.path().join("flag"),
    );
    let (home, data, flag) = (
        home.to_str().unwrap(),
        data.to_str().unwrap(),
        flag.to_str().unwrap(),
    );
    let both = [("MESHGUARD_HOME", home), ("MESHGUARD_DATA_DIR", data)];
    let run = CliRun::with_env(&["serve", "--validate-only"], &both);
    run.assert_code(0);
    assert!(
        run.stdout.contains(&format!("data dir: {data}\n")),
        "{}",
        run.stdout
    );
    let run = CliRun::with_env(&["serve", "--validate-only", "--data-dir", flag], &both);
    run.assert_code(0);
    assert!(
        run.stdout.contains(&format!("data dir: {flag}\n")),
        "{}",
        run.stdout
    );

    let short = [
        ("MESHGUARD_DATA_DIR", data),
        ("MESHGUARD_ADMIN_TOKEN", "short"),
    ];
    let run = CliRun::with_env(&["serve", "--validate-only"], &short);
    run.assert_code(1);
    assert!(
        run.stderr.contains(
            "environment variable MESHGUARD_ADMIN_TOKEN: `admin_token`: must be at least 16 \
             characters long"
        ),
        "{}",
        run.stderr
    );
    let run = CliRun::with_env(
        &[
            "serve",
            "--validate-only",
            "--admin-token",
            "0123456789abcdef",
        ],
        &short,
    );
    run.assert_code(0);
}

#[test]
fn serve_validate_only_refuses_a_policy_defined_by_two_files() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let policy =
        "name: files\nversion: \"1\"\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n";
    std::fs::write(policies.join("a.yaml"), policy).unwrap();
    std::fs::write(policies.join("b.yaml"), policy.replace("allow", "deny")).unwrap();
    let data = dir.path().join("data");
    let run = CliRun::bare(&[
        "serve",
        "--validate-only",
        "--policies",
        policies.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("policy `files`")
            && run.stderr.contains("b.yaml` is already defined by `")
            && run.stderr.contains("a.yaml`"),
        "{}",
        run.stderr
    );
    assert!(!data.exists(), "validate-only creates nothing");
}

#[test]
fn serve_refuses_to_start_when_its_redis_does_not_answer() {
    // Nothing listens on a freshly freed port; the URL comes from the environment (SPEC 8).
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let redis = format!("redis://:hunter2@127.0.0.1:{}", free_port());
    let addr = format!("127.0.0.1:{}", free_port());
    let run = CliRun::with_env(
        &[
            "serve",
            "--addr",
            &addr,
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[("MESHGUARD_REDIS__URL", &redis)],
    );
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("redis at 127.0.0.1:"), "{}", run.stderr);
    assert!(run.stderr.contains("--redis-url"), "{}", run.stderr);
    assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
}

/// How many policy files examples/policies holds.
fn example_policy_count() -> usize {
    std::fs::read_dir(repo_root().join("examples/policies"))
        .unwrap()
        .filter(|entry| {
            let path = entry.as_ref().unwrap().path();
            matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            )
        })
        .count()
}
