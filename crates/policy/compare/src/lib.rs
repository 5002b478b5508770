//! Nothing to build: this package only holds the `policy_decide` benchmark (benches/).
