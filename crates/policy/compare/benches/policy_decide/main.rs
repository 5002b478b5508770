//! `policy_decide`: the cost of one decision in MeshGuard's engine next to Cedar (`cedar-policy`)
//! and Rego (`regorus`) on equivalent policies, measured in the same run so that the ratios hold
//! on any machine.
//!
//! The policies: compare/policies/autogpt-production.yaml (the seed production policy as first
//! published, before its catch-all deny was added) and its hand translations in
//! `crates/policy/compare/policies/` (each file says how every construct maps), plus generated sets of 1 policy
//! and of 1,000 policies × 10 rules emitted in all three languages from one model
//! (`workload.rs`). Before anything is measured, every engine must give the expected answer —
//! same effect, same deciding policy and rule — for every measured request and for a set of
//! coverage requests; a comparison of different answers would be worthless.
//!
//! Each measured call goes from a MeshGuard-shaped request (action, resource, JSON context) to a
//! decision naming the rule that decided, including what each engine needs to build its own
//! request; agents and policies are loaded once, as a gateway would.
//!
//! Run: `scripts/bench-policy.sh` (see docs/benchmarks.md).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "benchmark setup: a translation that fails to load or disagrees must abort the run"
)]

mod cedar;
mod meshguard;
mod rego;
mod workload;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};

use crate::cedar::{CedarAgent, CedarEngine};
use crate::workload::{Agent, Probe};

const PRODUCTION_YAML: &str = include_str!("../../policies/autogpt-production.yaml");
const PRODUCTION_CEDAR: &str = include_str!("../../policies/autogpt-production.cedar");
const PRODUCTION_REGO: &str = include_str!("../../policies/autogpt-production.rego");
const CEDAR_SCHEMA: &str = include_str!("../../policies/autogpt-production.cedarschema");
const PAYMENTS_YAML: &str = include_str!("../../policies/payments-hours.yaml");
const PAYMENTS_CEDAR: &str = include_str!("../../policies/payments-hours.cedar");
const PAYMENTS_REGO: &str = include_str!("../../policies/payments-hours.rego");
const PAYMENTS_SCHEMA: &str = include_str!("../../policies/payments-hours.cedarschema");

/// One policy set loaded into all three engines.
struct Engines {
    meshguard: meshguard_policy::PolicySet,
    cedar: CedarEngine,
    rego: rego::RegoEngine,
}

/// One agent as each engine holds it.
struct LoadedAgent {
    meshguard: meshguard_policy::AgentProfile,
    cedar: CedarAgent,
    rego: regorus::Value,
}

impl Engines {
    fn production() -> Engines {
        Engines {
            meshguard: meshguard::policy_set(&[(
                "autogpt-production.yaml".to_owned(),
                PRODUCTION_YAML.to_owned(),
            )]),
            cedar: CedarEngine::new(CEDAR_SCHEMA, PRODUCTION_CEDAR),
            rego: rego::RegoEngine::new(vec![(
                "autogpt-production.rego".to_owned(),
                PRODUCTION_REGO.to_owned(),
            )]),
        }
    }

    /// payments-hours: numeric context conditions and a schedule.
    fn conditions() -> Engines {
        Engines {
            meshguard: meshguard::policy_set(&[(
                "payments-hours.yaml".to_owned(),
                PAYMENTS_YAML.to_owned(),
            )]),
            cedar: CedarEngine::with_conditions(PAYMENTS_SCHEMA, PAYMENTS_CEDAR),
            rego: rego::RegoEngine::with_conditions(workload::conditions_rego(
                PRODUCTION_REGO,
                PAYMENTS_REGO,
            )),
        }
    }

    fn generated(policies: usize) -> Engines {
        Engines {
            meshguard: meshguard::policy_set(&workload::generated_yaml(policies)),
            cedar: CedarEngine::new(CEDAR_SCHEMA, &workload::generated_cedar(policies)),
            rego: rego::RegoEngine::new(workload::generated_rego(PRODUCTION_REGO, policies)),
        }
    }

    fn load(&self, agent: &Agent) -> LoadedAgent {
        LoadedAgent {
            meshguard: meshguard::agent(agent),
            cedar: self.cedar.agent(agent),
            rego: rego::RegoEngine::agent(agent),
        }
    }

    /// Asserts that all three engines give the probe's expected answer.
    fn assert_agree(&self, set: &str, agent: &LoadedAgent, probe: &Probe) {
        let ours = meshguard::decide(
            &self.meshguard,
            &agent.meshguard,
            &probe.action,
            &probe.resource,
            &probe.context,
            probe.now,
        );
        let cedar = self.cedar.decide(
            &agent.cedar,
            &probe.action,
            &probe.resource,
            &probe.context,
            probe.now,
        );
        let rego = self.rego.decide(
            &agent.rego,
            &probe.action,
            &probe.resource,
            &probe.context,
            probe.now,
        );
        for (engine, verdict) in [("meshguard", ours), ("cedar", cedar), ("rego", rego)] {
            assert_eq!(
                verdict, probe.expected,
                "{set}: {engine} answers `{}` on `{}` differently",
                probe.label, probe.action
            );
        }
    }
}

/// A measured request: the policy set, the agent and the request.
struct Case<'a> {
    id: &'static str,
    engines: &'a Engines,
    agent: &'a LoadedAgent,
    probe: Probe,
}

fn bench_case(c: &mut Criterion, case: &Case<'_>, slow: bool) {
    let mut group = c.benchmark_group("policy_decide");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    if slow {
        // Milliseconds per call: a flat sampling of a few samples keeps the run short.
        group.sampling_mode(SamplingMode::Flat).sample_size(20);
    }
    let Case {
        id,
        engines,
        agent,
        probe,
    } = case;
    let (action, resource, context, now) = (
        probe.action.as_str(),
        probe.resource.as_str(),
        &probe.context,
        probe.now,
    );
    group.bench_function(BenchmarkId::new("meshguard", id), |b| {
        b.iter(|| {
            meshguard::decide(
                &engines.meshguard,
                &agent.meshguard,
                black_box(action),
                black_box(resource),
                black_box(context),
                black_box(now),
            )
        })
    });
    group.bench_function(BenchmarkId::new("cedar", id), |b| {
        b.iter(|| {
            engines.cedar.decide(
                &agent.cedar,
                black_box(action),
                black_box(resource),
                black_box(context),
                black_box(now),
            )
        })
    });
    group.bench_function(BenchmarkId::new("rego", id), |b| {
        b.iter(|| {
            engines.rego.decide(
                &agent.rego,
                black_box(action),
                black_box(resource),
                black_box(context),
                black_box(now),
            )
        })
    });
    group.finish();
}

fn policy_decide(c: &mut Criterion) {
    let production = Engines::production();
    let conditions = Engines::conditions();
    let payer = conditions.load(&workload::payer_agent());
    let small = Engines::generated(1);
    let large = Engines::generated(workload::LARGE_POLICIES);

    let production_agent = production.load(&workload::production_agent());
    let stranger = production.load(&workload::stranger_agent());
    let small_agent = small.load(&workload::generated_agent());
    let large_agent = large.load(&workload::generated_agent());

    let mut checked = 0;
    for probe in workload::production_cases()
        .iter()
        .chain(&workload::production_coverage())
    {
        production.assert_agree("autogpt-production", &production_agent, probe);
        checked += 1;
    }
    for probe in workload::production_cases() {
        let nobody = Probe {
            expected: workload::Verdict::DenyWithoutRule,
            ..probe
        };
        production.assert_agree("autogpt-production (no policy applies)", &stranger, &nobody);
        checked += 1;
    }
    for (name, engines, agent, policies) in [
        ("1 policy", &small, &small_agent, 1),
        (
            "1,000 policies",
            &large,
            &large_agent,
            workload::LARGE_POLICIES,
        ),
    ] {
        for probe in std::iter::once(workload::generated_case())
            .chain(workload::generated_coverage(policies))
        {
            engines.assert_agree(name, agent, &probe);
            checked += 1;
        }
    }
    for probe in workload::conditions_cases()
        .iter()
        .chain(&workload::conditions_coverage())
    {
        conditions.assert_agree("payments-hours", &payer, probe);
        checked += 1;
    }
    println!("policy_decide: meshguard, cedar and rego agree on all {checked} requests");

    let [allowed, denied, default_deny] =
        <[Probe; 3]>::try_from(workload::production_cases()).expect("three production cases");
    for (id, probe) in [
        ("allowed", allowed),
        ("denied", denied),
        ("default_deny", default_deny),
    ] {
        let case = Case {
            id,
            engines: &production,
            agent: &production_agent,
            probe,
        };
        bench_case(c, &case, false);
    }
    let [small_payment, huge_payment, open, closed] =
        <[Probe; 4]>::try_from(workload::conditions_cases()).expect("four condition cases");
    for (id, probe) in [
        ("conditions_allowed", small_payment),
        ("conditions_denied", huge_payment),
        ("schedule_allowed", open),
        ("schedule_closed", closed),
    ] {
        let case = Case {
            id,
            engines: &conditions,
            agent: &payer,
            probe,
        };
        bench_case(c, &case, false);
    }
    let rules_10 = Case {
        id: "rules_10",
        engines: &small,
        agent: &small_agent,
        probe: workload::generated_case(),
    };
    bench_case(c, &rules_10, false);
    let rules_10000 = Case {
        id: "rules_10000",
        engines: &large,
        agent: &large_agent,
        probe: workload::generated_case(),
    };
    bench_case(c, &rules_10000, true);
}

criterion_group!(benches, policy_decide);
criterion_main!(benches);
