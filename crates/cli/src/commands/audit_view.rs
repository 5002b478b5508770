//! How `audit stats` and `audit verify` answers are shown to people.

use serde_json::Value;

use crate::output::{Output, display, field, short_time};

/// `audit stats`: totals with percentages, top denied actions, and hourly buckets when asked.
pub fn print_stats(out: Output, period: u32, stats: &Value) {
    let count = |key: &str| stats.get(key).and_then(Value::as_u64).unwrap_or(0);
    let pct = |key: &str| stats.get(key).and_then(Value::as_f64).unwrap_or(0.0);
    outln!(
        "{} {} to {} ({period} h)",
        out.heading("checks"),
        short_time(stats.get("from").unwrap_or(&Value::Null)),
        short_time(stats.get("to").unwrap_or(&Value::Null))
    );
    let rows = vec![
        vec![
            "total".to_owned(),
            count("total").to_string(),
            String::new(),
        ],
        vec![
            out.decision("allow"),
            count("allowed").to_string(),
            format!("{:.1}%", pct("allowedPct")),
        ],
        vec![
            out.decision("deny"),
            count("denied").to_string(),
            format!("{:.1}%", pct("deniedPct")),
        ],
        vec![
            out.decision("require_approval"),
            count("requireApproval").to_string(),
            format!("{:.1}%", pct("requireApprovalPct")),
        ],
    ];
    outln!("{}", out.table(&["decision", "checks", "share"], rows));
    let top = stats
        .get("topDenied")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !top.is_empty() {
        outln!();
        let rows = top
            .iter()
            .map(|a| vec![field(a, "action"), field(a, "count")])
            .collect();
        outln!("{}", out.table(&["top denied action", "denials"], rows));
    }
    let shadow = stats
        .get("shadow")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !shadow.is_empty() {
        outln!();
        let rows = shadow
            .iter()
            .map(|s| {
                vec![
                    field(s, "policy"),
                    format!("{} → {}", field(s, "from"), field(s, "to")),
                    field(s, "count"),
                ]
            })
            .collect();
        outln!(
            "{}",
            out.table(&["shadow policy", "would change", "checks"], rows)
        );
    }
    let hourly = stats
        .get("hourly")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !hourly.is_empty() {
        outln!();
        let rows = hourly
            .iter()
            .map(|h| {
                vec![
                    short_time(h.get("hour").unwrap_or(&Value::Null)),
                    field(h, "total"),
                    field(h, "allowed"),
                    field(h, "denied"),
                    field(h, "requireApproval"),
                ]
            })
            .collect();
        outln!(
            "{}",
            out.table(&["hour", "total", "allowed", "denied", "approval"], rows)
        );
    }
}

/// The first break of an `audit verify` report, if any.
#[derive(Debug)]
pub struct ChainBreak {
    /// Instance id of the gateway whose chain broke.
    pub gateway: String,
    /// The first `seq` that does not verify.
    pub seq: u64,
    /// What is wrong there.
    pub reason: String,
}

/// What `audit verify` found, read from the gateway's report.
#[derive(Debug)]
pub struct Verdict {
    /// The report as the gateway sent it.
    pub report: Value,
    /// The first break, in gateway order.
    pub broken: Option<ChainBreak>,
}

impl Verdict {
    /// Reads the report; a report that says `ok: false` without naming a break still fails.
    pub fn read(report: &Value) -> Verdict {
        let chains = report
            .get("chains")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut broken = chains
            .iter()
            .find_map(|c| c.get("broken").filter(|b| !b.is_null()))
            .map(|b| ChainBreak {
                gateway: field(b, "gateway"),
                seq: b.get("seq").and_then(Value::as_u64).unwrap_or(0),
                reason: field(b, "reason"),
            });
        if broken.is_none() && report.get("ok").and_then(Value::as_bool) != Some(true) {
            broken = Some(ChainBreak {
                gateway: "-".into(),
                seq: 0,
                reason: "the gateway did not report the chain as intact".into(),
            });
        }
        Verdict {
            report: report.clone(),
            broken,
        }
    }
}

/// One line per chain, then the verdict naming the first broken `seq`.
pub fn print_verify(out: Output, verdict: &Verdict) {
    let chains = verdict
        .report
        .get("chains")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !chains.is_empty() {
        let rows = chains
            .iter()
            .map(|c| {
                let state = match c.get("broken").filter(|b| !b.is_null()) {
                    Some(b) => out.alert(&format!(
                        "broken at seq {}",
                        display(b.get("seq").unwrap_or(&Value::Null))
                    )),
                    None => out.good("ok"),
                };
                let from = c.get("fromSeq").or_else(|| c.get("anchorSeq"));
                vec![
                    field(c, "gateway"),
                    display(from.unwrap_or(&Value::Null)),
                    field(c, "headSeq"),
                    field(c, "events"),
                    field(c, "signedSeq"),
                    state,
                ]
            })
            .collect();
        outln!(
            "{}",
            out.table(
                &[
                    "gateway",
                    "from seq",
                    "head seq",
                    "events",
                    "signed to",
                    "state"
                ],
                rows
            )
        );
    }
    match &verdict.broken {
        None => outln!(
            "{}: {} events verified in {} chain{}",
            out.good("ok"),
            field(&verdict.report, "eventsChecked"),
            chains.len(),
            if chains.len() == 1 { "" } else { "s" }
        ),
        Some(b) => outln!(
            "{}: the chain of gateway {} is broken at seq {}: {}",
            out.alert("BROKEN"),
            b.gateway,
            b.seq,
            b.reason
        ),
    }
    if verdict.broken.is_some() {
        return;
    }
    for chain in &chains {
        let seq = |name: &str| chain.get(name).and_then(Value::as_u64).unwrap_or(0);
        let (from, head, anchor) = (seq("fromSeq"), seq("headSeq"), seq("anchorSeq"));
        let signed = chain.get("signedSeq").and_then(Value::as_u64);
        let gateway = field(chain, "gateway");
        if from > anchor {
            outln!(
                "note: gateway {gateway}: walked from the checkpoint at seq {from}, verified \
                 before; `--full` walks from seq {}",
                anchor + 1
            );
        }
        match signed {
            Some(signed) if signed < head => outln!(
                "note: gateway {gateway}: seq {} to {head} link to the signed part but are not \
                 signed yet (the next checkpoint will sign them)",
                signed + 1
            ),
            None if head > from => outln!(
                "note: gateway {gateway}: no signed checkpoint covers seq {} to {head} yet",
                from + 1
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_break_is_named() {
        let report = json!({"ok": false, "eventsChecked": 7, "chains": [
            {"gateway": "g1", "anchorSeq": 0, "headSeq": 4, "events": 4, "broken": null},
            {"gateway": "g2", "anchorSeq": 0, "headSeq": 9, "events": 3, "broken": {"gateway": "g2", "seq": 3, "reason": "hash mismatch"}}
        ]});
        let verdict = Verdict::read(&report);
        let broken = verdict.broken.unwrap();
        assert_eq!((broken.gateway.as_str(), broken.seq), ("g2", 3));
        assert!(
            Verdict::read(&json!({"ok": true, "chains": []}))
                .broken
                .is_none()
        );
        assert!(
            Verdict::read(&json!({"ok": false, "chains": []}))
                .broken
                .is_some()
        );
    }
}
