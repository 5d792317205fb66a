//! `capwatch caps`: a mask's capabilities by name, and a container's granted beside used.

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};

use crate::{
    advice::{Report, Verdict},
    names,
};

/// One line per capability set in `mask`: `CAP_CHOWN (0)`.
pub fn decoded(mask: u64) -> String {
    names::mask_bits(mask).map(|bit| format!("{} ({bit})\n", names::capability(bit))).collect()
}

pub fn side_by_side(report: &Report) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY).set_header(["capability", "granted", "used by the application"]);
    for cap in &report.capabilities {
        table.add_row([
            cap.capability.as_str(),
            match cap.granted {
                Some(true) => "yes",
                Some(false) => "no",
                None => "?",
            },
            match cap.verdict {
                Verdict::Needed => "yes",
                Verdict::Missing => "denied, and needed",
                Verdict::Optional => "yes, optional",
                Verdict::Unavailable => "needed, not grantable here",
                Verdict::NotNeeded => "",
            },
        ]);
    }
    format!("{} ({})\n{table}\n", report.container.name, report.container.short_id())
}
