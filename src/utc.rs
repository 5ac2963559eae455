//! Calendar dates in UTC from Unix time, without a date crate: the one conversion behind
//! the date an ESP Mail shows when delivered ([`crate::world::esp`]) and the creation
//! times `espmail account list` prints.
//!
//! May touch: nothing outside memory; imports nothing from the crate.

use std::time::{SystemTime, UNIX_EPOCH};

const SECS_PER_DAY: u64 = 86_400;

/// (year, month 1–12, day 1–31, hour, minute) in UTC for unix seconds.
pub fn utc_parts(unix_secs: u64) -> (i64, u8, u8, u8, u8) {
    let days = i64::try_from(unix_secs / SECS_PER_DAY).unwrap_or(i64::MAX / 2);
    let rem = unix_secs % SECS_PER_DAY;
    let (y, m, d) = civil_from_days(days);
    // rem < 86400, so these fit.
    let hour = u8::try_from(rem / 3600).unwrap_or(0);
    let minute = u8::try_from(rem % 3600 / 60).unwrap_or(0);
    (y, m, d, hour, minute)
}

/// `YYYY-MM-DD HH:MM UTC`; a time before 1970 shows as the epoch.
pub fn utc_minute(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d, hour, minute) = utc_parts(secs);
    format!("{y:04}-{m:02}-{d:02} {hour:02}:{minute:02} UTC")
}

/// Proleptic Gregorian date of a day count since 1970-01-01: shift the epoch to
/// 0000-03-01 so leap days fall at the end of a 400-year era, then count eras, years of
/// the era and days of the (March-based) year.
pub fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365, from March 1st
    let mp = (5 * doy + 2) / 153; // 0 = March … 11 = February
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        u8::try_from(month).unwrap_or(1),
        u8::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_417), (2025, 11, 25));
        assert_eq!(
            utc_minute(UNIX_EPOCH + Duration::from_secs(20_417 * SECS_PER_DAY + 3_661)),
            "2025-11-25 01:01 UTC"
        );
        assert_eq!(
            utc_minute(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01 00:00 UTC"
        );
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_parts(0), (1970, 1, 1, 0, 0));
        assert_eq!(utc_parts(951_782_400), (2000, 2, 29, 0, 0)); // leap day, 400-year rule
        assert_eq!(utc_parts(4_107_542_399), (2100, 2, 28, 23, 59)); // 2100 is not leap
        assert_eq!(utc_parts(4_107_542_400), (2100, 3, 1, 0, 0));
        assert_eq!(utc_parts(1_704_067_199), (2023, 12, 31, 23, 59));
        assert_eq!(utc_parts(1_709_164_800), (2024, 2, 29, 0, 0));
        // Every day for 150 years: consecutive, months and days in range.
        let mut prev = civil_from_days(-1);
        for d in 0..(150 * 366) {
            let cur = civil_from_days(d);
            let next_day = (prev.0, prev.1, prev.2 + 1);
            let next_month = (prev.0, prev.1 + 1, 1);
            let next_year = (prev.0 + 1, 1, 1);
            assert!(
                cur == next_day || cur == next_month || cur == next_year,
                "{prev:?} -> {cur:?}"
            );
            assert!((1..=12).contains(&cur.1) && (1..=31).contains(&cur.2));
            prev = cur;
        }
    }
}
