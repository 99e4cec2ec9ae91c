//! Numbers and durations for people, in reports and progress lines.

use std::time::Duration;

/// E-values for people: `3.2`, `41`, `1.2e6`.
pub(crate) fn fmt_e(e: f64) -> String {
    if !e.is_finite() {
        "inf".to_owned()
    } else if e >= 1e5 {
        format!("{e:.1e}")
    } else if e >= 10.0 {
        format!("{e:.0}")
    } else if e >= 0.01 || e == 0.0 {
        format!("{e:.2}")
    } else {
        format!("{e:.1e}")
    }
}

/// `1.5000` -> `1.5`.
pub(crate) fn trim(x: f64) -> String {
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

/// Formats seconds the way a person reads a latency: `250ms`, `12.5ms`, `1s 500ms`.
pub(crate) fn format_seconds(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "+Inf".to_owned();
    }
    if seconds < 1.0 {
        let ms = seconds * 1000.0;
        if (ms - ms.round()).abs() < 1e-9 {
            format!("{}ms", ms.round())
        } else {
            format!("{ms:.1}ms")
        }
    } else {
        Duration::try_from_secs_f64(seconds).map_or_else(|_| format!("{seconds}s"), humanize)
    }
}

/// `90s` -> `1m 30s`, `1.5s` -> `1s 500ms`: the duration truncated to
/// milliseconds, in `humantime`'s format (the one `--interval` accepts).
pub(crate) fn humanize(d: Duration) -> String {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(humanize(Duration::from_secs(90)), "1m 30s");
        assert_eq!(humanize(Duration::from_millis(1500)), "1s 500ms");
        assert_eq!(humanize(Duration::from_nanos(30_002_345_678)), "30s 2ms");
        assert_eq!(humanize(Duration::ZERO), "0s");
        assert_eq!(format_seconds(0.25), "250ms");
        assert_eq!(format_seconds(2.5), "2s 500ms");
        assert_eq!(format_seconds(0.0125), "12.5ms");
    }
}
