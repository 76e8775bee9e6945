//! Timestamps as the ledgers store them: RFC 3339 in UTC, fixed width so they sort as text (the
//! DynamoDB ledger's sort keys rely on that). The calendar arithmetic is the `time` crate's
//! (already in the build through the AWS SDK).

use std::time::SystemTime;
use time::OffsetDateTime;

/// `2026-11-22T10:00:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = OffsetDateTime::from(t);
    format!("{}T{}Z", ymd(d), hms(d))
}

/// `2026-11-22T10:00:00.123Z`.
pub fn rfc3339_ms(t: SystemTime) -> String {
    let d = OffsetDateTime::from(t);
    format!("{}T{}.{:03}Z", ymd(d), hms(d), d.millisecond())
}

/// `2026-11-22` (UTC).
pub fn date(t: SystemTime) -> String {
    ymd(OffsetDateTime::from(t))
}

/// Whole seconds since the Unix epoch (0 before it): TTLs, retry windows, ledger sightings.
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn ymd(d: OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

fn hms(d: OffsetDateTime) -> String {
    format!("{:02}:{:02}:{:02}", d.hour(), d.minute(), d.second())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn known_instants_format_at_fixed_width() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_007);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339_ms(t), "2026-11-18T11:06:40.007Z");
        assert_eq!(date(t), "2026-11-18");
    }
}
