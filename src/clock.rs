//! Wall-clock helpers. The domain never reads the clock; the edges pass time in.

use std::time::{SystemTime, UNIX_EPOCH};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 in UTC with seconds precision, e.g. `2026-11-28T23:45:42Z`.
pub fn rfc3339(unix_secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// RFC 3339 in UTC with millisecond precision (the `time` crate's form: the fraction loses
/// its trailing zeros, and is left out when it is zero).
pub fn rfc3339_ms(unix_ms: i64) -> String {
    let mut out = Vec::with_capacity(24);
    write_rfc3339_ms(&mut out, unix_ms);
    String::from_utf8(out).expect("RFC 3339 is ASCII")
}

/// The last millisecond of year 9999: RFC 3339 has four-digit years.
const MAX_HAND_WRITTEN_MS: i64 = 253_402_300_799_999;

/// Append [`rfc3339_ms`]'s text to `out`. Written by hand for 1970 to 9999 (the commit record's
/// `committed_at` and every log line's `ts`, both on the writer, which paid `time`'s formatter
/// and a `String` for each); any other instant goes through the `time` crate.
pub fn write_rfc3339_ms(out: &mut Vec<u8>, unix_ms: i64) {
    if !(0..=MAX_HAND_WRITTEN_MS).contains(&unix_ms) {
        out.extend_from_slice(rfc3339_ms_by_time(unix_ms).as_bytes());
        return;
    }
    let ms = (unix_ms % 1000) as u32;
    let secs = unix_ms / 1000;
    let (year, month, day) = civil_from_days(secs / 86_400);
    let second_of_day = (secs % 86_400) as u32;
    // Filled in place and appended once: `YYYY-MM-DDTHH:MM:SS.mmmZ` at most.
    let mut text = *b"0000-00-00T00:00:00.000Z";
    let mut two = |at: usize, n: u32| {
        text[at] = b'0' + (n / 10) as u8;
        text[at + 1] = b'0' + (n % 10) as u8;
    };
    two(0, year / 100);
    two(2, year % 100);
    two(5, month);
    two(8, day);
    two(11, second_of_day / 3600);
    two(14, second_of_day / 60 % 60);
    two(17, second_of_day % 60);
    let len = if ms == 0 {
        19
    } else {
        text[20] = b'0' + (ms / 100) as u8;
        text[21] = b'0' + (ms / 10 % 10) as u8;
        text[22] = b'0' + (ms % 10) as u8;
        // Trailing zeros dropped, as `time` writes a fraction.
        if ms % 10 != 0 {
            23
        } else if ms % 100 != 0 {
            22
        } else {
            21
        }
    };
    text[len] = b'Z';
    out.extend_from_slice(&text[..=len]);
}

/// Proleptic Gregorian (year, month, day) of `days` since 1970-01-01, for `days >= 0`
/// (H. Hinnant's `civil_from_days`, eras of 400 years counted from 0000-03-01).
fn civil_from_days(days: i64) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year as u32, month as u32, day as u32)
}

/// [`rfc3339_ms`] through the `time` crate: the instants the hand-written form does not take,
/// and the tests' reference for those it does.
fn rfc3339_ms_by_time(unix_ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(unix_ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let t = t
        .replace_nanosecond((unix_ms.rem_euclid(1000) as u32) * 1_000_000)
        .unwrap_or(t);
    t.format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

/// Parse RFC 3339 into Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hand_written_rfc3339_ms_is_the_time_crates() {
        let mut cases = vec![
            0,
            1,
            10,
            100,
            120,
            999,
            1_000,
            59_999,
            86_399_999,
            86_400_000,
            951_782_400_000,   // 2000-02-29
            951_868_799_999,   // 2000-02-29T23:59:59.999
            4_107_542_400_000, // 2100-03-01
            1_767_225_600_000, // 2026-01-01
            1_798_761_599_990, // 2026-12-31T23:59:59.99
            MAX_HAND_WRITTEN_MS,
            MAX_HAND_WRITTEN_MS + 1,
            -1,
            -86_400_001,
            i64::MIN,
            i64::MAX,
        ];
        // Every seventh day of 800 years (leap centuries included), at a varying time of day.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for day in (0..146_097 * 2).step_by(7) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(day * 86_400_000 + (x % 86_400_000) as i64);
        }
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push((x % (MAX_HAND_WRITTEN_MS as u64 + 1)) as i64);
        }
        for ms in cases {
            let mut out = b"x".to_vec();
            write_rfc3339_ms(&mut out, ms);
            let want = rfc3339_ms_by_time(ms);
            assert_eq!(&out[1..], want.as_bytes(), "{ms}");
            assert_eq!(rfc3339_ms(ms), want, "{ms}");
        }
    }

    #[test]
    fn rfc3339_round_trips() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(parse_rfc3339("2026-01-01T00:00:00Z"), Some(1_767_225_600));
        assert_eq!(parse_rfc3339(&rfc3339(1_767_225_600)), Some(1_767_225_600));
        assert_eq!(
            parse_rfc3339("2026-01-01T01:00:00+01:00"),
            Some(1_767_225_600)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(rfc3339_ms(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
    }
}
