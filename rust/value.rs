//! The engine's value and column-type vocabulary, shared by plans, compilers and drivers.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};

/// The storage type of a column, decided once from the model's annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ColType {
    Integer,
    BigInteger,
    Float,
    Text,
    Bool,
    Bytes,
    DateTime,
    DateTimeTz,
    Date,
    Time,
    Json,
}

impl ColType {
    pub fn from_name(name: &str) -> Option<ColType> {
        Some(match name {
            "int" => ColType::Integer,
            "bigint" => ColType::BigInteger,
            "float" => ColType::Float,
            "str" => ColType::Text,
            "bool" => ColType::Bool,
            "bytes" => ColType::Bytes,
            "datetime" => ColType::DateTime,
            "datetimetz" => ColType::DateTimeTz,
            "date" => ColType::Date,
            "time" => ColType::Time,
            "json" => ColType::Json,
            _ => return None,
        })
    }

    /// The Python-facing name used in error messages.
    pub fn python_name(self) -> &'static str {
        match self {
            ColType::Integer | ColType::BigInteger => "int",
            ColType::Float => "float",
            ColType::Text => "str",
            ColType::Bool => "bool",
            ColType::Bytes => "bytes",
            ColType::DateTime => "datetime (naive)",
            ColType::DateTimeTz => "datetime (timezone-aware)",
            ColType::Date => "date",
            ColType::Time => "time",
            ColType::Json => "JSON (dict, list, str, int, float, bool or None)",
        }
    }

    pub fn is_textual(self) -> bool {
        matches!(self, ColType::Text)
    }
}

/// One SQL value. Plans carry these as bound parameters; drivers decode rows into them.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Json(serde_json::Value),
    Date(NaiveDate),
    Time(NaiveTime),
    DateTime(NaiveDateTime),
    DateTimeTz(DateTime<FixedOffset>),
    /// An exact decimal, as text (PostgreSQL NUMERIC, Python `Decimal`).
    Decimal(String),
    /// A list bound as one parameter: a JSON array on SQLite, an array on PostgreSQL.
    List(Vec<Value>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

/// SQLite keeps temporal values as ISO-8601 text with a fixed six-digit fraction, so that text
/// order equals time order and comparisons in SQL stay correct.
pub mod text_format {
    use super::*;
    use chrono::{Datelike, Timelike};

    pub const DATETIME: &str = "%Y-%m-%d %H:%M:%S%.6f";
    pub const DATE: &str = "%Y-%m-%d";
    pub const TIME: &str = "%H:%M:%S%.6f";

    /// Writes `v` as `width` decimal digits, zero-padded.
    fn put(out: &mut Vec<u8>, v: u32, width: usize) {
        let start = out.len();
        out.resize(start + width, b'0');
        let mut v = v;
        for c in out[start..].iter_mut().rev() {
            *c = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }

    fn put_date(out: &mut Vec<u8>, v: &NaiveDate) {
        put(out, v.year() as u32, 4);
        out.push(b'-');
        put(out, v.month(), 2);
        out.push(b'-');
        put(out, v.day(), 2);
    }

    fn put_time(out: &mut Vec<u8>, v: &NaiveTime) {
        put(out, v.hour(), 2);
        out.push(b':');
        put(out, v.minute(), 2);
        out.push(b':');
        put(out, v.second(), 2);
        out.push(b'.');
        put(out, v.nanosecond() / 1000, 6);
    }

    /// Four-digit years and no leap second: what the hand-written writers cover; anything
    /// else goes through chrono's formatter.
    fn plain(d: &NaiveDate, t: Option<&NaiveTime>) -> bool {
        (0..=9999).contains(&d.year()) && t.is_none_or(|t| t.nanosecond() < 1_000_000_000)
    }

    fn text(out: Vec<u8>) -> String {
        String::from_utf8(out).expect("ASCII digits and separators")
    }

    // Written by hand rather than through chrono's format strings: binding a datetime is
    // on the bulk-insert path, and the general formatter costs a few thousand instructions.
    pub fn datetime(v: &NaiveDateTime) -> String {
        if !plain(&v.date(), Some(&v.time())) {
            return v.format(DATETIME).to_string();
        }
        let mut out = Vec::with_capacity(32);
        put_date(&mut out, &v.date());
        out.push(b' ');
        put_time(&mut out, &v.time());
        text(out)
    }

    /// Aware datetimes are stored in UTC (so text order is time order) with an explicit offset.
    pub fn datetime_tz(v: &DateTime<FixedOffset>) -> String {
        let mut s = datetime(&v.naive_utc());
        s.push_str("+00:00");
        s
    }

    pub fn date(v: &NaiveDate) -> String {
        if !plain(v, None) {
            return v.format(DATE).to_string();
        }
        let mut out = Vec::with_capacity(10);
        put_date(&mut out, v);
        text(out)
    }

    pub fn time(v: &NaiveTime) -> String {
        if v.nanosecond() >= 1_000_000_000 {
            return v.format(TIME).to_string();
        }
        let mut out = Vec::with_capacity(15);
        put_time(&mut out, v);
        text(out)
    }

    fn digits(b: &[u8]) -> Option<u32> {
        let mut v = 0u32;
        for c in b {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + (c - b'0') as u32;
        }
        Some(v)
    }

    /// `YYYY-MM-DD HH:MM:SS[.ffffff]`, the form OrmKit writes, read without a format parser.
    fn parse_datetime_fast(b: &[u8]) -> Option<NaiveDateTime> {
        if b.len() < 19
            || b[4] != b'-'
            || b[7] != b'-'
            || !(b[10] == b' ' || b[10] == b'T')
            || b[13] != b':'
            || b[16] != b':'
        {
            return None;
        }
        let date = NaiveDate::from_ymd_opt(digits(&b[0..4])? as i32, digits(&b[5..7])?, digits(&b[8..10])?)?;
        let micro = match &b[19..] {
            [] => 0,
            [b'.', frac @ ..] if !frac.is_empty() && frac.len() <= 9 => {
                let v = digits(frac)?;
                // Scale to microseconds whatever the number of digits.
                let scaled = v as u64 * 10u64.pow(9 - frac.len() as u32) / 1000;
                scaled as u32
            }
            _ => return None,
        };
        let time = NaiveTime::from_hms_micro_opt(digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?, micro)?;
        Some(date.and_time(time))
    }

    pub fn parse_datetime(s: &str) -> Option<NaiveDateTime> {
        let s = s.trim();
        if let Some(v) = parse_datetime_fast(s.as_bytes()) {
            return Some(v);
        }
        for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"] {
            if let Ok(v) = NaiveDateTime::parse_from_str(s, fmt) {
                return Some(v);
            }
        }
        NaiveDate::parse_from_str(s, DATE).ok().map(|d| d.and_time(NaiveTime::MIN))
    }

    pub fn parse_datetime_tz(s: &str) -> Option<DateTime<FixedOffset>> {
        let s = s.trim();
        if let Some(naive) = s.strip_suffix("+00:00").and_then(|n| parse_datetime_fast(n.as_bytes())) {
            return Some(naive.and_utc().fixed_offset());
        }
        for fmt in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
            if let Ok(v) = DateTime::parse_from_str(s, fmt) {
                return Some(v);
            }
        }
        // A naive text value in an aware column is read as UTC.
        parse_datetime(s).map(|n| n.and_utc().fixed_offset())
    }

    pub fn parse_date(s: &str) -> Option<NaiveDate> {
        let b = s.trim().as_bytes();
        if b.len() == 10 && b[4] == b'-' && b[7] == b'-' {
            if let Some(d) =
                (|| NaiveDate::from_ymd_opt(digits(&b[0..4])? as i32, digits(&b[5..7])?, digits(&b[8..10])?))()
            {
                return Some(d);
            }
        }
        NaiveDate::parse_from_str(s.trim(), DATE).ok()
    }

    pub fn parse_time(s: &str) -> Option<NaiveTime> {
        let s = s.trim();
        NaiveTime::parse_from_str(s, "%H:%M:%S%.f").or_else(|_| NaiveTime::parse_from_str(s, "%H:%M")).ok()
    }
}

/// Text from the database as a `String`: validated in one pass (the common, valid case),
/// with invalid sequences replaced only when there are any.
pub fn text_of(raw: &[u8]) -> String {
    if raw.is_ascii() {
        // SAFETY: ASCII is valid UTF-8. `is_ascii` checks a word at a time, faster than
        // full UTF-8 validation on the text databases mostly hold.
        return unsafe { String::from_utf8_unchecked(raw.to_vec()) };
    }
    match std::str::from_utf8(raw) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(raw).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn temporal_text_matches_the_format_strings() {
        use super::text_format::*;
        let dates = [(1, 1, 1), (1999, 12, 31), (2024, 2, 29), (9999, 12, 31), (10000, 1, 1), (-5, 3, 4)];
        let times = [
            (0, 0, 0, 0),
            (23, 59, 59, 999_999_999),
            (8, 0, 37, 7_331_000),
            (12, 30, 5, 1_000),
            (23, 59, 59, 1_500_000_000),
        ];
        for (y, m, d) in dates {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            assert_eq!(super::text_format::date(&date), date.format(DATE).to_string());
            for (h, mi, s, ns) in times {
                let t = NaiveTime::from_hms_nano_opt(h, mi, s, ns).unwrap();
                let dt = date.and_time(t);
                assert_eq!(datetime(&dt), dt.format(DATETIME).to_string(), "{dt:?}");
                assert_eq!(super::text_format::time(&t), t.format(TIME).to_string(), "{t:?}");
                let tz = dt.and_utc().fixed_offset();
                assert_eq!(datetime_tz(&tz), format!("{}+00:00", dt.format(DATETIME)));
            }
        }
    }

    use super::*;

    #[test]
    fn datetime_text_round_trips_and_sorts() {
        let a = NaiveDate::from_ymd_opt(2024, 1, 2).unwrap().and_hms_micro_opt(3, 4, 5, 6).unwrap();
        let b = NaiveDate::from_ymd_opt(2024, 1, 2).unwrap().and_hms_opt(3, 4, 5).unwrap();
        let ta = text_format::datetime(&a);
        assert_eq!(ta, "2024-01-02 03:04:05.000006");
        assert_eq!(text_format::parse_datetime(&ta), Some(a));
        assert!(text_format::datetime(&b) < ta);
    }

    #[test]
    fn fast_parse_matches_the_format_parser() {
        for t in
            ["2024-01-02 03:04:05", "2024-01-02T03:04:05.5", "1999-12-31 23:59:59.999999", "2024-02-29 00:00:00.000001"]
        {
            let slow = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
                .unwrap();
            assert_eq!(text_format::parse_datetime(t), Some(slow), "{t}");
        }
        assert_eq!(text_format::parse_datetime("2024-02-30 00:00:00"), None);
        assert_eq!(text_format::parse_date("2024-05-06"), NaiveDate::from_ymd_opt(2024, 5, 6));
    }

    #[test]
    fn aware_datetime_is_stored_in_utc() {
        let v = DateTime::parse_from_rfc3339("2024-05-01T10:00:00+02:00").unwrap();
        let t = text_format::datetime_tz(&v);
        assert_eq!(t, "2024-05-01 08:00:00.000000+00:00");
        assert_eq!(text_format::parse_datetime_tz(&t).unwrap(), v);
    }
}
