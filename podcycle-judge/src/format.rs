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

/// Formats seconds the way a person reads a latency: `250ms`, `1.5s`.
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

/// `90s` -> `1m30s`; sub-second parts kept with millisecond resolution.
pub(crate) fn humanize(d: Duration) -> String {
    let total_ms = d.as_millis();
    let (h, rem) = (total_ms / 3_600_000, total_ms % 3_600_000);
    let (m, rem) = (rem / 60_000, rem % 60_000);
    let (s, ms) = (rem / 1000, rem % 1000);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if ms > 0 {
        if s > 0 || out.is_empty() {
            let frac = format!("{:03}", ms);
            out.push_str(&format!("{s}.{}s", frac.trim_end_matches('0')));
        }
    } else if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(humanize(Duration::from_secs(90)), "1m30s");
        assert_eq!(humanize(Duration::from_millis(1500)), "1.5s");
        assert_eq!(humanize(Duration::ZERO), "0s");
        assert_eq!(format_seconds(0.25), "250ms");
        assert_eq!(format_seconds(2.5), "2.5s");
    }
}
