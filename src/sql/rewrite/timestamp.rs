//! A transaction timestamp written as PostgreSQL `timestamptz` input text.
//!
//! The calendar arithmetic is the proleptic Gregorian one PostgreSQL uses
//! (Howard Hinnant's days-from-civil inverse), so no date crate is needed.

use std::fmt::{self, Write};

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// `YYYY-MM-DD HH:MM:SS.ffffff+00` (`... BC` before year 1) for a count of
/// microseconds since 1970-01-01 00:00 UTC, held on the stack.
pub(super) struct UtcText {
    buf: [u8; 40],
    len: usize,
}

impl UtcText {
    pub(super) fn new(micros: i64) -> Self {
        let days = micros.div_euclid(MICROS_PER_DAY);
        let of_day = micros.rem_euclid(MICROS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let (secs, frac) = (of_day / 1_000_000, of_day % 1_000_000);
        let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
        // PostgreSQL has no year 0: the year before 1 AD is 1 BC.
        let (shown, era) = if year > 0 { (year, "") } else { (1 - year, " BC") };
        let mut text = UtcText { buf: [0; 40], len: 0 };
        // Cannot fail: at most 34 bytes (a six-digit year) go into 40.
        let _ = write!(text, "{shown:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}.{frac:06}+00{era}");
        text
    }

    pub(super) fn as_str(&self) -> &str {
        // Only ASCII is ever written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl Write for UtcText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        self.buf.get_mut(self.len..end).ok_or(fmt::Error)?.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// (year, month, day) of the day `days` after 1970-01-01; year 0 is 1 BC.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of the 400-year era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year
    let mp = (5 * doy + 2) / 153; // March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::UtcText;

    #[test]
    fn formats_known_instants() {
        let cases = [
            (0, "1970-01-01 00:00:00.000000+00"),
            (1, "1970-01-01 00:00:00.000001+00"),
            (-1, "1969-12-31 23:59:59.999999+00"),
            (1_700_000_000_123_456, "2023-11-14 22:13:20.123456+00"),
            (951_782_400_000_000, "2000-02-29 00:00:00.000000+00"), // leap day, 400-year rule
            (4_107_542_399_999_999, "2100-02-28 23:59:59.999999+00"), // 2100 is not a leap year
            (4_107_542_400_000_000, "2100-03-01 00:00:00.000000+00"),
            (-86_400_000_000, "1969-12-31 00:00:00.000000+00"),
            (-14_182_940_000_000, "1969-07-20 20:17:40.000000+00"),
            (-14_182_895_599_500_000, "1520-07-25 02:46:40.500000+00"),
            (-11_670_955_200_000_000, "1600-02-29 12:00:00.000000+00"),
            (-2_208_988_800_000_000, "1900-01-01 00:00:00.000000+00"),
            (-62_135_596_800_000_000, "0001-01-01 00:00:00.000000+00"),
            (-62_135_596_800_000_001, "0001-12-31 23:59:59.999999+00 BC"),
            (-62_167_219_200_000_000, "0001-01-01 00:00:00.000000+00 BC"),
            (253_402_300_799_999_999, "9999-12-31 23:59:59.999999+00"),
            (253_402_300_800_000_000, "10000-01-01 00:00:00.000000+00"),
            (i64::MAX, "294247-01-10 04:00:54.775807+00"),
            (i64::MIN, "290309-12-21 19:59:05.224192+00 BC"),
        ];
        for (micros, want) in cases {
            assert_eq!(UtcText::new(micros).as_str(), want, "{micros}");
        }
    }
}
