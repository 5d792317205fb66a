//! The kernel stamps events with CLOCK_MONOTONIC (`bpf_ktime_get_ns`); people want wall time.

use std::time::{Duration, SystemTime};

/// Wall-clock time of a monotonic kernel timestamp.
pub fn wall(monotonic_ns: u64) -> SystemTime {
    let now_mono = monotonic_now_ns();
    let now_wall = SystemTime::now();
    if monotonic_ns <= now_mono {
        now_wall - Duration::from_nanos(now_mono - monotonic_ns)
    } else {
        now_wall + Duration::from_nanos(monotonic_ns - now_mono)
    }
}

pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_timestamps_map_to_recent_wall_time() {
        let one_second_ago = monotonic_now_ns() - 1_000_000_000;
        let age = SystemTime::now().duration_since(wall(one_second_ago)).expect("in the past");
        assert!(age >= Duration::from_millis(999) && age < Duration::from_secs(2), "{age:?}");
    }
}
