//! `capwatch verify`: the proof table, or JSON.

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};

use crate::verify::Verification;

/// Table for people, or the whole verification as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

pub fn render(verification: &Verification, format: Format) -> String {
    match format {
        Format::Table => table(verification),
        Format::Json => serde_json::to_string_pretty(verification).expect("verifications serialize"),
    }
}

fn table(v: &Verification) -> String {
    let mut out = format!("container {}: {}\n", v.container_name, super::docker(&v.capabilities));
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY).set_header(["run", "worked", "evidence"]);
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
