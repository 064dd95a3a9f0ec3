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

    pub const DATETIME: &str = "%Y-%m-%d %H:%M:%S%.6f";
    pub const DATE: &str = "%Y-%m-%d";
    pub const TIME: &str = "%H:%M:%S%.6f";

    pub fn datetime(v: &NaiveDateTime) -> String {
        v.format(DATETIME).to_string()
    }

    /// Aware datetimes are stored in UTC (so text order is time order) with an explicit offset.
    pub fn datetime_tz(v: &DateTime<FixedOffset>) -> String {
        format!("{}+00:00", v.naive_utc().format(DATETIME))
    }

    pub fn date(v: &NaiveDate) -> String {
        v.format(DATE).to_string()
    }

    pub fn time(v: &NaiveTime) -> String {
        v.format(TIME).to_string()
    }

    pub fn parse_datetime(s: &str) -> Option<NaiveDateTime> {
        let s = s.trim();
        for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"] {
            if let Ok(v) = NaiveDateTime::parse_from_str(s, fmt) {
                return Some(v);
            }
        }
        NaiveDate::parse_from_str(s, DATE).ok().map(|d| d.and_time(NaiveTime::MIN))
    }

    pub fn parse_datetime_tz(s: &str) -> Option<DateTime<FixedOffset>> {
        let s = s.trim();
        for fmt in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
            if let Ok(v) = DateTime::parse_from_str(s, fmt) {
                return Some(v);
            }
        }
        // A naive text value in an aware column is read as UTC.
        parse_datetime(s).map(|n| n.and_utc().fixed_offset())
    }

    pub fn parse_date(s: &str) -> Option<NaiveDate> {
        NaiveDate::parse_from_str(s.trim(), DATE).ok()
    }

    pub fn parse_time(s: &str) -> Option<NaiveTime> {
        let s = s.trim();
        NaiveTime::parse_from_str(s, "%H:%M:%S%.f").or_else(|_| NaiveTime::parse_from_str(s, "%H:%M")).ok()
    }
}

#[cfg(test)]
mod tests {
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
    fn aware_datetime_is_stored_in_utc() {
        let v = DateTime::parse_from_rfc3339("2024-05-01T10:00:00+02:00").unwrap();
        let t = text_format::datetime_tz(&v);
        assert_eq!(t, "2024-05-01 08:00:00.000000+00:00");
        assert_eq!(text_format::parse_datetime_tz(&t).unwrap(), v);
    }
}
