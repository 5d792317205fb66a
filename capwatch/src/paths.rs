//! Where capwatch keeps things on a host.

/// The daemon's state directory (systemd's `StateDirectory=capwatch`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/capwatch";
/// In the state directory: what the running daemon attached, and what it tried.
pub const STATUS_FILE: &str = "status.json";
/// The daemon's config file; absent means every default.
pub const DEFAULT_CONFIG: &str = "/etc/capwatch/config.toml";
