//! How answers are printed. A report: a table for people; the least-privilege flags as `docker
//! run`, compose and Kubernetes want them; or everything as JSON (docs/report-format.md). The
//! other commands' tables live beside it, one file each.

pub mod caps;
pub mod explain;
pub mod ps;
pub mod trace;
pub mod verify;
pub mod whatif;

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};

use crate::advice::{Report, Usage, Verdict};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Docker,
    Compose,
    K8s,
    Json,
}

/// The report in `format`. Where the least privilege is printed alone (compose, k8s), what goes
/// with it (`notes`) follows as comments; the docker flags stay one line that a shell can
/// substitute, so the caller prints their notes apart (`capwatch report` on stderr).
pub fn render(report: &Report, format: Format) -> String {
    let commented = |text: String| {
        let notes: String = notes(report).iter().map(|n| format!("# {n}\n")).collect();
        format!("{text}{notes}")
    };
    match format {
        Format::Table => table(report),
        Format::Docker => docker(&report.cap_add),
        Format::Compose => commented(compose(&report.cap_add)),
        Format::K8s => commented(k8s(&report.cap_add)),
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
    alternatives.chain(optional).chain(unavailable).chain(uncertain).collect()
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

fn table(report: &Report) -> String {
    let c = &report.container;
    let mut out = format!(
        "container {} ({}), image {}, {}\n",
        c.name,
        c.short_id(),
        c.image.as_deref().unwrap_or("unknown"),
        match &c.exited_at {
            Some(at) => format!("exited {at}"),
            None => "running".to_string(),
        }
    );
    out.push_str(&match (&report.observed_from, &report.observed_to) {
        (Some(from), Some(to)) => format!(
            "observed from {from} to {to} ({}): the advice covers only what the container did while watched\n",
            humantime::format_duration(std::time::Duration::from_secs(report.observed_seconds))
        ),
        _ => "nothing observed yet: no advice can be given\n".to_string(),
    });
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY).set_header(["capability", "granted", "used", "denied", "verdict", "why"]);
    for cap in &report.capabilities {
        table.add_row([
            cap.capability.clone(),
            match cap.granted {
                Some(true) => "yes".into(),
                Some(false) => "no".into(),
                None => "?".into(),
            },
            usage(cap.used.as_ref()),
            usage(cap.denied.as_ref()),
            match cap.verdict {
                Verdict::Needed => "needed".into(),
                Verdict::NotNeeded => "not needed".into(),
                Verdict::Missing => "MISSING".into(),
                Verdict::Optional => "optional".into(),
                Verdict::Unavailable => "UNAVAILABLE".into(),
            },
            cap.reason.clone(),
        ]);
    }
    out.push_str(&table.to_string());
    out.push_str(&format!("\nleast privilege: {}\n", docker(&report.cap_add)));
    if let Some(verified) = &report.verified {
        let set = match verified.capabilities == report.cap_add {
            true => String::new(),
            false => format!(" (of {})", docker(&verified.capabilities)),
        };
        out.push_str(&format!("verified: {}, {}{set}\n", verified.verdict, verified.at));
    }
    for note in notes(report) {
        out.push_str(&format!("{note}\n"));
    }
    if c.granted.as_ref().is_some_and(|g| g.privileged) {
        out.push_str(
            "leaving --privileged also brings back the seccomp profile, AppArmor and device rules it turned off\n",
        );
    }
    out
}

fn usage(usage: Option<&Usage>) -> String {
    usage.map_or(String::new(), |u| format!("{}× in {} by {}", u.count, u.syscalls.join(","), u.programs.join(",")))
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
