//! What `capwatch verify` concluded, as the store keeps it and `capwatch report` shows it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    ProvenMinimal,
    SufficientNotMinimal,
    NotSufficient,
}

/// One verification: the set, each copy's evidence, the verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verification {
    pub container_id: String,
    pub container_name: String,
    /// RFC 3339, when it finished.
    pub at: String,
    /// The set tried, as `cap_add` names them.
    pub capabilities: Vec<String>,
    pub verdict: Outcome,
    /// `proven minimal`, `sufficient, not minimal (X can go)`, `not sufficient (this failed: …)`.
    pub summary: String,
    /// Capabilities of the set whose copy worked without them.
    pub can_go: Vec<String>,
    /// The first copy is the whole set's; each other lacks the one it names.
    pub trials: Vec<Trial>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trial {
    /// The capability left out, if one was.
    pub without: Option<String>,
    pub capabilities: Vec<String>,
    /// Whether the copy worked as the original did, with no new operation refused and no
    /// syscall failing that never failed in the original.
    pub worked: bool,
    /// What happened: its exit or its --check, each operation refused for want of a capability,
    /// and each syscall failing that never failed in the original.
    pub evidence: String,
}
