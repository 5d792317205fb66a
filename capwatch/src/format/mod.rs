//! How answers are printed. A report: a table for people; the least-privilege flags as `docker
//! run`, compose and Kubernetes want them; or everything as JSON (docs/report-format.md). The
//! other commands' tables live beside it, one file each.

pub mod caps;
pub mod explain;
pub mod layout;
pub mod ps;
pub mod seccomp;
pub mod trace;
pub mod verify;
pub mod whatif;

use comfy_table::{Cell, Color};

use crate::{
    advice::{CapabilityReport, Report, Usage, Verdict, NEVER_CHECKED},
    containers::Runtime,
};

/// `explain`, `whatif` and `verify`: a table for people, or everything as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TableOrJson {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Docker,
    Compose,
    K8s,
    Systemd,
    // A seccomp profile for `docker run --security-opt seccomp=FILE`; the same as a Security
    // Profiles Operator object with the securityContext that uses it.
    Seccomp,
    SeccompK8s,
    Json,
}

impl Format {
    /// Whether it is written from the syscalls recorded rather than the capabilities alone.
    pub fn needs_syscalls(self) -> bool {
        matches!(self, Format::Seccomp | Format::SeccompK8s)
    }
}

/// The report in `format`; `verbose` adds each capability's syscalls and programs to the table.
/// Where the least privilege is printed alone (compose, k8s), what goes
/// with it (`notes`) follows as comments; the docker flags stay one line that a shell can
/// substitute, so the caller prints their notes apart (`capwatch report` on stderr).
pub fn render(report: &Report, format: Format, verbose: bool) -> String {
    let commented = |text: String| {
        let notes: String = notes(report).iter().map(|n| format!("# {n}\n")).collect();
        format!("{text}{notes}")
    };
    match format {
        Format::Table => table(report, verbose),
        Format::Docker => docker(&report.cap_add),
        Format::Compose => commented(compose(&report.cap_add)),
        Format::K8s => commented(k8s(&report.cap_add)),
        Format::Systemd => commented(systemd(report)),
        Format::Seccomp => seccomp::docker(report),
        Format::SeccompK8s => seccomp::k8s(report),
        Format::Json => serde_json::to_string_pretty(report).expect("reports serialize"),
    }
}

/// What goes with the least privilege: its alternatives, the optional capabilities left out,
/// and what the advice could not see.
pub fn notes(report: &Report) -> Vec<String> {
    let alternatives =
        report.alternatives.iter().map(|a| format!("or, instead of {}: {} ({})", a.capability, a.instead, a.why));
    let optional = report
        .capabilities
        .iter()
        .filter(|c| c.verdict == Verdict::Optional)
        .map(|c| format!("left out: {} ({})", c.capability.trim_start_matches("CAP_"), c.reason));
    let unavailable = report
        .capabilities
        .iter()
        .filter(|c| c.verdict == Verdict::Unavailable)
        .map(|c| format!("left out: {} ({})", c.capability.trim_start_matches("CAP_"), c.reason));
    let uncertain = report.uncertain.iter().map(|u| format!("uncertain: {u}"));
    let merged = report.merged.iter().map(|m| {
        format!("merged from {} container(s) of {}: {}", m.containers.len(), m.image, m.containers.join(", "))
    });
    merged.chain(alternatives).chain(optional).chain(unavailable).chain(uncertain).collect()
}

/// `--cap-drop ALL --cap-add NET_RAW …`
pub fn docker(add: &[String]) -> String {
    std::iter::once("--cap-drop ALL".to_string())
        .chain(add.iter().map(|c| format!("--cap-add {c}")))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn compose(add: &[String]) -> String {
    let mut yaml = String::from("cap_drop:\n  - ALL\n");
    if !add.is_empty() {
        yaml.push_str("cap_add:\n");
        for cap in add {
            yaml.push_str(&format!("  - {cap}\n"));
        }
    }
    yaml
}

/// A systemd drop-in (`systemctl edit UNIT`): the bounding set; ambient capabilities where the
/// service runs as a user other than root, who holds no capability otherwise; and
/// NoNewPrivileges= where no program it exec'd gains capabilities from its file.
pub fn systemd(report: &Report) -> String {
    let caps: Vec<String> = report.cap_add.iter().map(|c| format!("CAP_{c}")).collect();
    let mut unit = String::from("[Service]\n");
    unit.push_str(&format!("CapabilityBoundingSet={}\n", caps.join(" ")));
    let user = report.container.granted.as_ref().and_then(|g| g.user.as_deref());
    let root = user.is_none_or(|u| matches!(u.split(':').next(), Some("root" | "0" | "")));
    if !root && !caps.is_empty() {
        unit.push_str(&format!("AmbientCapabilities={}\n", caps.join(" ")));
    }
    if report.file_capabilities.is_empty() {
        unit.push_str(
            "# no program it ran gained capabilities from its file; set-user-ID ones (su, sudo) would stop too\n",
        );
        unit.push_str("NoNewPrivileges=yes\n");
    }
    unit
}

pub fn k8s(add: &[String]) -> String {
    let mut yaml = String::from("securityContext:\n  capabilities:\n    drop:\n      - ALL\n");
    if !add.is_empty() {
        yaml.push_str("    add:\n");
        for cap in add {
            yaml.push_str(&format!("      - {cap}\n"));
        }
    }
    yaml
}

/// The least privilege first, with what goes with it; then each capability's verdict; then what
/// is still uncertain, in one paragraph.
fn table(report: &Report, verbose: bool) -> String {
    let c = &report.container;
    let subject = match c.runtime {
        _ if report.merged.is_some() => c.name.clone(),
        Runtime::Command => format!("command {}", c.name),
        Runtime::Systemd => format!("unit {}", c.name),
        _ => format!("container {} ({}), image {}", c.name, c.short_id(), c.image.as_deref().unwrap_or("unknown")),
    };
    let state = match &report.merged {
        Some(m) => format!("merged from {} container(s): {}", m.containers.len(), m.containers.join(", ")),
        None => ps::state(c).to_string(),
    };
    let mut out = layout::paragraph(&format!("{subject}, {state}"), "  ");
    out.push_str(&match (&report.observed_from, &report.observed_to) {
        (Some(from), Some(to)) => layout::paragraph(
            &format!(
                "observed from {from} to {to} ({}): the advice covers only what it did while watched",
                humantime::format_duration(std::time::Duration::from_secs(report.observed_seconds))
            ),
            "  ",
        ),
        _ => "nothing observed yet: no advice can be given\n".to_string(),
    });
    out.push('\n');
    out.push_str(&layout::paragraph(&format!("least privilege: {}", docker(&report.cap_add)), "  "));
    if let Some(verified) = &report.verified {
        let set = match verified.capabilities == report.cap_add {
            true => String::new(),
            false => format!(" (of {})", docker(&verified.capabilities)),
        };
        out.push_str(&layout::paragraph(&format!("verified: {}, {}{set}", verified.verdict, verified.at), "  "));
    }
    for alternative in &report.alternatives {
        let text = format!("or, instead of {}: {} ({})", alternative.capability, alternative.instead, alternative.why);
        out.push_str(&format!("  {}", layout::paragraph(&text, "    ")));
    }
    if let Some(syscalls) = &report.syscalls {
        out.push_str(&layout::paragraph(&seccomp::summary(syscalls), "  "));
    }
    if c.granted.as_ref().is_some_and(|g| g.privileged) {
        out.push_str(&layout::paragraph(
            "  leaving --privileged also brings back the seccomp profile, AppArmor and device rules it turned off",
            "    ",
        ));
    }
    out.push('\n');

    let mut header = vec!["capability", "granted", "verdict", "why"];
    if verbose {
        header.splice(2..2, ["used", "denied", "kept by capset"]);
    }
    let mut table = layout::table(header);
    // Without -v, the capabilities nothing asked for are one line under the table.
    let (unchecked, shown): (Vec<&CapabilityReport>, Vec<&CapabilityReport>) =
        report.capabilities.iter().partition(|c| !verbose && c.reason == NEVER_CHECKED);
    for cap in shown {
        let granted = match cap.granted {
            Some(true) => "yes",
            Some(false) => "no",
            None => "?",
        };
        let mut row =
            vec![Cell::new(&cap.capability), Cell::new(granted), verdict_cell(cap.verdict), Cell::new(&cap.reason)];
        if verbose {
            let detail = [&cap.used, &cap.denied, &cap.kept].map(|u| Cell::new(usage(u.as_ref())));
            row.splice(2..2, detail);
        }
        table.add_row(row);
    }
    out.push_str(&table.to_string());
    out.push('\n');
    if !unchecked.is_empty() {
        let names: Vec<&str> = unchecked.iter().map(|c| c.capability.trim_start_matches("CAP_")).collect();
        out.push_str(&layout::paragraph(&format!("granted, never checked: {}", names.join(", ")), "  "));
    }
    let left_out = report
        .capabilities
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Optional | Verdict::Unavailable))
        .map(|c| format!("{} is left out ({}).", c.capability.trim_start_matches("CAP_"), c.reason));
    let uncertain: Vec<String> = left_out.chain(report.uncertain.iter().map(|u| sentence(u))).collect();
    if !uncertain.is_empty() {
        out.push('\n');
        out.push_str(&layout::paragraph(&format!("Still uncertain: {}", uncertain.join(" ")), ""));
    }
    if !verbose {
        out.push_str("(-v shows each capability's syscalls and programs)\n");
    }
    out
}

/// A note as a sentence: capitalised, ending with a full stop.
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let first = chars.next().map(|c| c.to_uppercase().collect::<String>()).unwrap_or_default();
    let end = if text.ends_with('.') { "" } else { "." };
    format!("{first}{}{end}", chars.as_str())
}

/// A verdict as the table prints it, coloured where the table styles its cells.
pub fn verdict_cell(verdict: Verdict) -> Cell {
    let (text, colour) = match verdict {
        Verdict::Needed => ("needed", Color::Green),
        Verdict::NotNeeded => ("not needed", Color::DarkGrey),
        Verdict::Missing => ("MISSING", Color::Red),
        Verdict::Optional => ("optional", Color::Yellow),
        Verdict::Unavailable => ("UNAVAILABLE", Color::Red),
    };
    layout::coloured(text, Some(colour))
}

fn usage(usage: Option<&Usage>) -> String {
    usage.map_or(String::new(), |u| format!("{}× in {} by {}", u.count, u.syscalls.join(", "), u.programs.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_privilege_in_each_format() {
        let add = vec!["NET_RAW".to_string(), "CHOWN".to_string()];
        assert_eq!(docker(&add), "--cap-drop ALL --cap-add NET_RAW --cap-add CHOWN");
        assert_eq!(docker(&[]), "--cap-drop ALL");
        assert_eq!(compose(&add), "cap_drop:\n  - ALL\ncap_add:\n  - NET_RAW\n  - CHOWN\n");
        assert_eq!(compose(&[]), "cap_drop:\n  - ALL\n");
        assert_eq!(
            k8s(&add),
            "securityContext:\n  capabilities:\n    drop:\n      - ALL\n    add:\n      - NET_RAW\n      - CHOWN\n"
        );
    }
}
