//! `--start-at`: the shared instant at which every replica of a distributed swarm starts its
//! ramp, so N replicas ramp as one swarm. Either an RFC 3339 UTC time
//! (`2026-12-02T07:00:00Z`, fractional seconds allowed) or `+SECONDS` after this process
//! started. Parsed by hand (the only format needed is UTC with a `Z`), so no date crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When the ramp starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// A wall-clock instant (from an RFC 3339 UTC time).
    At(SystemTime),
    /// This long after the process started (`+SECONDS`; `+0`, `now` and `` start at once).
    After(Duration),
}

impl StartAt {
    /// How long to wait from `now` (zero when the instant has passed).
    pub fn wait_from(&self, now: SystemTime) -> Duration {
        match self {
            StartAt::At(t) => t.duration_since(now).unwrap_or(Duration::ZERO),
            StartAt::After(d) => *d,
        }
    }

    /// The setting as given back in `--print-config` (RFC 3339 or `+SECONDS`).
    pub fn to_text(&self) -> String {
        match self {
            StartAt::At(t) => format_rfc3339(*t),
            StartAt::After(d) => format!("+{}", d.as_secs_f64()),
        }
    }
}

/// Parse `--start-at` / `START_AT`.
pub fn parse_start_at(s: &str) -> Result<StartAt, String> {
    let t = s.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("now") {
        return Ok(StartAt::After(Duration::ZERO));
    }
    if let Some(secs) = t.strip_prefix('+') {
        return match secs.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(StartAt::After(Duration::from_secs_f64(v))),
            _ => Err(format!(
                "`{s}` is not +SECONDS (example: +30) nor an RFC 3339 UTC time (example: 2026-12-02T07:00:00Z)"
            )),
        };
    }
    parse_rfc3339_utc(t).map(StartAt::At)
}

/// `YYYY-MM-DDTHH:MM:SS[.frac]Z` (also `+00:00` for the zone, a space or `t` for the `T`).
pub fn parse_rfc3339_utc(s: &str) -> Result<SystemTime, String> {
    let bad = || {
        format!("`{s}` is not an RFC 3339 UTC time (example: 2026-12-02T07:00:00Z) nor +SECONDS")
    };
    let body = s
        .strip_suffix(['Z', 'z'])
        .or_else(|| s.strip_suffix("+00:00"))
        .or_else(|| s.strip_suffix("-00:00"))
        .ok_or_else(bad)?;
    let b = body.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<u64, String> {
        let part = &body[r];
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac = &body[19..];
    let nanos = if frac.is_empty() {
        0
    } else {
        let digits = frac.strip_prefix('.').ok_or_else(bad)?;
        if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        format!("{digits:0<9}").parse::<u32>().map_err(|_| bad())?
    };
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || min > 59
        || sec > 60
    {
        return Err(bad());
    }
    let days = days_from_civil(year as i64, month as u32, day as u32);
    let secs = days as u64 * 86400 + hour * 3600 + min * 60 + sec;
    Ok(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// RFC 3339 UTC with milliseconds (`2026-12-02T07:00:00.000Z`).
pub fn format_rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86400) as i64);
    let s = secs % 86400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_millis()
    )
}

fn is_leap(y: u64) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_utc_times_parse_to_unix_seconds() {
        let t = parse_rfc3339_utc("2026-12-02T07:00:00Z").unwrap();
        // date -u -d 2026-12-02T07:00:00Z +%s
        assert_eq!(t, UNIX_EPOCH + Duration::from_secs(1_796_194_800));
        let t = parse_rfc3339_utc("2024-02-29T23:59:59.5+00:00").unwrap();
        assert_eq!(t, UNIX_EPOCH + Duration::from_millis(1_709_251_199_500));
        assert_eq!(format_rfc3339(t), "2024-02-29T23:59:59.500Z");
        for bad in [
            "2026-12-02T07:00:00",
            "2026-12-02T07:00:00+01:00",
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-02T24:00:00Z",
            "tomorrow",
            "2026-12-02T07:00:00.Z",
        ] {
            assert!(parse_rfc3339_utc(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn start_at_takes_a_time_or_seconds_from_now() {
        assert_eq!(
            parse_start_at("+30").unwrap(),
            StartAt::After(Duration::from_secs(30))
        );
        assert_eq!(parse_start_at("").unwrap(), StartAt::After(Duration::ZERO));
        assert!(parse_start_at("+-3").is_err());
        assert!(parse_start_at("30").is_err());
        let at = parse_start_at("2026-12-02T07:00:00Z").unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_796_194_790);
        assert_eq!(at.wait_from(now), Duration::from_secs(10));
        let later = UNIX_EPOCH + Duration::from_secs(1_796_194_900);
        assert_eq!(at.wait_from(later), Duration::ZERO);
        assert_eq!(at.to_text(), "2026-12-02T07:00:00.000Z");
    }
}
