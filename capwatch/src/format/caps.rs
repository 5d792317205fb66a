//! `capwatch caps`: a mask's capabilities set and not set beside Docker's default set, a
//! process's live sets, and a container's granted beside used.

use super::layout;
use crate::{
    advice::{Report, Verdict, DOCKER_DEFAULT_CAPS},
    names,
};

/// The capabilities `mask` sets and those it does not, side by side, and how it differs from
/// Docker's default set.
pub fn decoded(mask: u64) -> String {
    let all = names::all_capabilities();
    let named =
        |bits: u64| names::mask_bits(bits).map(|bit| format!("{} ({bit})", names::capability(bit))).collect::<Vec<_>>();
    let (set, unset) = (named(mask & all), named(all & !mask));
    let mut table = layout::table([format!("set ({})", set.len()), format!("not set ({})", unset.len())]);
    for row in 0..set.len().max(unset.len()) {
        table.add_row([set.get(row).cloned().unwrap_or_default(), unset.get(row).cloned().unwrap_or_default()]);
    }
    let beyond = names::mask_bits(mask & !all).map(|b| b.to_string()).collect::<Vec<_>>();
    let mut out = layout::paragraph(&format!("{mask:016x} {}", against_docker(mask)), "  ");
    out.push_str(&format!("{table}\n"));
    if !beyond.is_empty() {
        out.push_str(&format!("bits this kernel names no capability for: {}\n", beyond.join(", ")));
    }
    out
}

/// A process's five capability sets as /proc shows them, each beside Docker's default set.
pub fn live(who: &str, sets: &[(&str, u64)]) -> String {
    let mut table = layout::table(["set", "mask", "capabilities", "compared with Docker's default set"]);
    for (name, mask) in sets {
        table.add_row([name.to_string(), format!("{mask:016x}"), mask.count_ones().to_string(), against_docker(*mask)]);
    }
    format!("{who}\n{table}\n(capwatch caps decode MASK names each capability of a set)\n")
}

/// `= Docker's default + SYS_ADMIN, NET_ADMIN − MKNOD`, or `= nothing` for an empty mask.
pub fn against_docker(mask: u64) -> String {
    if mask == 0 {
        return "= no capability".to_string();
    }
    let short = |bits: u64| {
        names::mask_bits(bits)
            .map(|b| names::capability(b).trim_start_matches("CAP_").to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (added, dropped) = (mask & !DOCKER_DEFAULT_CAPS, DOCKER_DEFAULT_CAPS & !mask);
    let mut text = "= Docker's default".to_string();
    if added != 0 {
        text.push_str(&format!(" + {}", short(added)));
    }
    if dropped != 0 {
        text.push_str(&format!(" − {}", short(dropped)));
    }
    text
}

pub fn side_by_side(report: &Report) -> String {
    let mut table = layout::table(["capability", "granted", "used by the application"]);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_read_against_dockers_default() {
        assert_eq!(against_docker(DOCKER_DEFAULT_CAPS), "= Docker's default");
        assert_eq!(against_docker(0), "= no capability");
        // + SYS_ADMIN (21), − MKNOD (27).
        assert_eq!(
            against_docker((DOCKER_DEFAULT_CAPS | 1 << 21) & !(1 << 27)),
            "= Docker's default + SYS_ADMIN − MKNOD"
        );
    }
}
