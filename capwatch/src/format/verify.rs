//! `capwatch verify`: the proof table, or JSON.

use super::{layout, TableOrJson as Format};
use crate::verification::Verification;

pub fn render(verification: &Verification, format: Format) -> String {
    match format {
        Format::Table => table(verification),
        Format::Json => serde_json::to_string_pretty(verification).expect("verifications serialize"),
    }
}

fn table(v: &Verification) -> String {
    let mut out = format!("container {}: {}\n", v.container_name, super::docker(&v.capabilities));
    let mut table = layout::table(["run", "worked", "evidence"]);
    for trial in &v.trials {
        table.add_row([
            match &trial.without {
                Some(cap) => format!("without {cap}"),
                None => "the whole set".to_string(),
            },
            if trial.worked { "yes" } else { "no" }.to_string(),
            trial.evidence.clone(),
        ]);
    }
    out.push_str(&format!("{table}\nverdict: {}\n", v.summary));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verification::{Outcome, Trial};

    #[test]
    fn the_proof_table_has_a_row_per_run_and_the_verdict() {
        let trial = |without: Option<&str>, worked: bool, evidence: &str| Trial {
            without: without.map(Into::into),
            capabilities: vec![],
            worked,
            evidence: evidence.into(),
        };
        let verification = Verification {
            container_id: "c".repeat(64),
            container_name: "web".into(),
            at: "2026-11-30T18:00:00.000Z".into(),
            capabilities: vec!["NET_RAW".into()],
            verdict: Outcome::ProvenMinimal,
            summary: "proven minimal".into(),
            can_go: vec![],
            trials: vec![
                trial(None, true, "exited 0, as the original did"),
                trial(Some("NET_RAW"), false, "exited 2, the original 0"),
            ],
        };
        let table = render(&verification, Format::Table);
        assert!(table.starts_with("container web: --cap-drop ALL --cap-add NET_RAW\n"), "{table}");
        assert!(table.contains("the whole set") && table.contains("without NET_RAW"), "{table}");
        assert!(table.ends_with("verdict: proven minimal\n"), "{table}");
    }
}
