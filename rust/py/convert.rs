//! Python values to engine values and back, one place per type.

use chrono::{FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDate, PyDateAccess, PyDateTime, PyDelta, PyDeltaAccess, PyDict, PyFloat, PyInt,
    PyList, PyMemoryView, PyString, PyTime, PyTimeAccess, PyTuple, PyTzInfoAccess,
};

use crate::value::{ColType, Value};

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

/// Describes the value for an error message without dumping huge reprs.
pub fn describe(obj: &Bound<'_, PyAny>) -> String {
    let r = obj.repr().map(|r| r.to_string()).unwrap_or_default();
    let r = if r.chars().count() > 60 { format!("{}...", r.chars().take(57).collect::<String>()) } else { r };
    format!("{} {}", type_name(obj), r)
}

fn naive_date(d: &impl PyDateAccess) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(d.get_year(), d.get_month() as u32, d.get_day() as u32)
}

fn naive_time(t: &impl PyTimeAccess) -> Option<NaiveTime> {
    NaiveTime::from_hms_micro_opt(
        t.get_hour() as u32,
        t.get_minute() as u32,
        t.get_second() as u32,
        t.get_microsecond(),
    )
}

fn naive_datetime(dt: &Bound<'_, PyDateTime>) -> Option<NaiveDateTime> {
    Some(NaiveDateTime::new(naive_date(dt)?, naive_time(dt)?))
}

fn aware_datetime(dt: &Bound<'_, PyDateTime>) -> PyResult<Option<chrono::DateTime<FixedOffset>>> {
    let off = dt.call_method0("utcoffset")?;
    let Ok(delta) = off.cast::<PyDelta>() else {
        return Ok(None);
    };
    let secs = delta.get_days() * 86_400 + delta.get_seconds();
    let Some(tz) = FixedOffset::east_opt(secs) else {
        return Ok(None);
    };
    let Some(naive) = naive_datetime(dt) else {
        return Ok(None);
    };
    Ok(tz.from_local_datetime(&naive).single())
}

/// An attribute's value as it would be written: NULL when it is unset or does not convert.
pub fn written_value(obj: Option<&Bound<'_, PyAny>>, ty: ColType) -> Value {
    obj.and_then(|v| to_value(v, ty).ok()).unwrap_or(Value::Null)
}

/// Whether `obj` converts (as `to_value` would) to a value equal to `was`, decided without
/// building the value for the common cases (None, and exact ints, strs and floats in columns
/// of their type); None where only the full conversion can tell.
pub fn same_value(obj: &Bound<'_, PyAny>, ty: ColType, was: &Value) -> Option<bool> {
    if obj.is_none() {
        return Some(was.is_null());
    }
    match ty {
        ColType::Integer | ColType::BigInteger if obj.is_exact_instance_of::<PyInt>() => {
            let n = obj.extract::<i64>().ok()?;
            Some(matches!(was, Value::Int(w) if *w == n))
        }
        ColType::Text if obj.is_exact_instance_of::<PyString>() => {
            let s = obj.cast::<PyString>().ok()?.to_str().ok()?;
            Some(matches!(was, Value::Text(w) if w == s))
        }
        ColType::Float if obj.is_exact_instance_of::<PyFloat>() => {
            let v = obj.cast::<PyFloat>().ok()?.value();
            if v.is_nan() {
                return None;
            }
            Some(matches!(was, Value::Float(w) if *w == v))
        }
        _ => None,
    }
}

/// Converts `obj` for a column of type `ty`. `Err` carries what was expected, for the caller
/// to wrap with the model and field names.
pub fn to_value(obj: &Bound<'_, PyAny>, ty: ColType) -> Result<Value, String> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    let expected = || format!("expected {}, got {}", ty.python_name(), describe(obj));
    let is_bool = obj.is_instance_of::<PyBool>();
    match ty {
        ColType::Integer | ColType::BigInteger => {
            if is_bool || !obj.is_instance_of::<PyInt>() {
                return Err(expected());
            }
            obj.extract::<i64>()
                .map(Value::Int)
                .map_err(|_| format!("{} is out of the 64-bit integer range", describe(obj)))
        }
        ColType::Float => {
            if is_bool {
                return Err(expected());
            }
            if let Ok(f) = obj.cast::<PyFloat>() {
                let v = f.value();
                if v.is_nan() {
                    // SQLite would read NaN back as NULL; refuse it on every backend alike.
                    return Err("NaN cannot be stored (SQLite reads it back as NULL); use None".to_string());
                }
                return Ok(Value::Float(v));
            }
            if obj.is_instance_of::<PyInt>() {
                return obj.extract::<f64>().map(Value::Float).map_err(|_| expected());
            }
            Err(expected())
        }
        ColType::Text => match obj.cast::<PyString>() {
            Ok(s) => Ok(Value::Text(s.to_str().map_err(|_| expected())?.to_owned())),
            Err(_) => Err(expected()),
        },
        ColType::Bool => match obj.cast::<PyBool>() {
            Ok(b) => Ok(Value::Bool(b.is_true())),
            Err(_) => Err(expected()),
        },
        ColType::Bytes => {
            if let Ok(b) = obj.cast::<PyBytes>() {
                Ok(Value::Bytes(b.as_bytes().to_vec()))
            } else if let Ok(b) = obj.cast::<PyByteArray>() {
                Ok(Value::Bytes(b.to_vec()))
            } else if obj.is_instance_of::<PyMemoryView>() {
                obj.call_method0("tobytes")
                    .and_then(|b| Ok(b.cast::<PyBytes>()?.as_bytes().to_vec()))
                    .map(Value::Bytes)
                    .map_err(|_| expected())
            } else {
                Err(expected())
            }
        }
        ColType::DateTime => {
            let dt = obj.cast::<PyDateTime>().map_err(|_| expected())?;
            if dt.get_tzinfo().is_some() {
                return Err(format!(
                    "got a timezone-aware datetime {}; the column stores naive datetimes (declare it with DateTime(timezone=True) to keep the offset)",
                    describe(obj)
                ));
            }
            naive_datetime(dt).map(Value::DateTime).ok_or_else(expected)
        }
        ColType::DateTimeTz => {
            let dt = obj.cast::<PyDateTime>().map_err(|_| expected())?;
            if dt.get_tzinfo().is_none() {
                return Err(format!(
                    "got a naive datetime {}; the column stores timezone-aware datetimes (attach a tzinfo, e.g. timezone.utc)",
                    describe(obj)
                ));
            }
            match aware_datetime(dt) {
                Ok(Some(v)) => Ok(Value::DateTimeTz(v)),
                _ => Err(expected()),
            }
        }
        ColType::Date => {
            if obj.is_instance_of::<PyDateTime>() {
                return Err(format!("expected a date, got a datetime {}; pass value.date()", describe(obj)));
            }
            let d = obj.cast::<PyDate>().map_err(|_| expected())?;
            naive_date(d).map(Value::Date).ok_or_else(expected)
        }
        ColType::Time => {
            let t = obj.cast::<PyTime>().map_err(|_| expected())?;
            if t.get_tzinfo().is_some() {
                return Err(format!("expected a time without tzinfo, got {}", describe(obj)));
            }
            naive_time(t).map(Value::Time).ok_or_else(expected)
        }
        ColType::Json => to_json(obj, 0).map(Value::Json),
    }
}

pub fn to_json(obj: &Bound<'_, PyAny>, depth: usize) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    if depth > 256 {
        return Err("JSON value nested too deeply".into());
    }
    if obj.is_none() {
        return Ok(J::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(J::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(J::from(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(J::from(u));
        }
        return Err(format!("{} is too large for JSON", describe(obj)));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return serde_json::Number::from_f64(f.value())
            .map(J::Number)
            .ok_or_else(|| format!("{} (NaN or infinity) cannot be stored as JSON", describe(obj)));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(J::String(s.to_str().map_err(|e| e.to_string())?.to_owned()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut m = serde_json::Map::new();
        for (k, v) in d.iter() {
            let key = k
                .cast::<PyString>()
                .map_err(|_| format!("JSON object keys must be str, got {}", describe(&k)))?
                .to_str()
                .map_err(|e| e.to_string())?
                .to_owned();
            m.insert(key, to_json(&v, depth + 1)?);
        }
        return Ok(J::Object(m));
    }
    if let Ok(l) = obj.cast::<PyList>() {
        return l.iter().map(|v| to_json(&v, depth + 1)).collect::<Result<Vec<_>, _>>().map(J::Array);
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return t.iter().map(|v| to_json(&v, depth + 1)).collect::<Result<Vec<_>, _>>().map(J::Array);
    }
    Err(format!("{} is not JSON-serializable (use dict, list, str, int, float, bool or None)", describe(obj)))
}

/// Converts a raw-SQL parameter by its own Python type.
pub fn dynamic_value(obj: &Bound<'_, PyAny>) -> Result<Value, String> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    let ty = if obj.is_instance_of::<PyInt>() {
        ColType::Integer
    } else if obj.is_instance_of::<PyFloat>() {
        ColType::Float
    } else if obj.is_instance_of::<PyString>() {
        ColType::Text
    } else if obj.is_instance_of::<PyBytes>()
        || obj.is_instance_of::<PyByteArray>()
        || obj.is_instance_of::<PyMemoryView>()
    {
        ColType::Bytes
    } else if let Ok(dt) = obj.cast::<PyDateTime>() {
        if dt.get_tzinfo().is_some() {
            ColType::DateTimeTz
        } else {
            ColType::DateTime
        }
    } else if obj.is_instance_of::<PyDate>() {
        ColType::Date
    } else if obj.is_instance_of::<PyTime>() {
        ColType::Time
    } else if obj.is_instance_of::<PyDict>() || obj.is_instance_of::<PyList>() {
        ColType::Json
    } else if obj.get_type().name().is_ok_and(|n| n == "Decimal") {
        return Ok(Value::Decimal(obj.str().map_err(|e| e.to_string())?.to_string()));
    } else {
        return Err(format!(
            "cannot bind {}; use None, bool, int, float, str, bytes, datetime, date, time, dict or list",
            describe(obj)
        ));
    };
    to_value(obj, ty)
}

pub fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => py.None().into_bound(py),
        J::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        J::String(s) => PyString::new(py, s).into_any(),
        J::Array(a) => {
            let items = a.iter().map(|x| json_to_py(py, x)).collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any()
        }
        J::Object(m) => {
            let d = PyDict::new(py);
            for (k, x) in m {
                d.set_item(k, json_to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}

/// A Python `str` for `s`. ASCII text, most text in practice, is copied straight into a new
/// compact string: `s` is valid UTF-8 already, and CPython's decoder would check it again.
fn py_str<'py>(py: Python<'py>, s: &str) -> PyResult<Bound<'py, PyAny>> {
    if !s.is_ascii() {
        return Ok(PyString::new(py, s).into_any());
    }
    // SAFETY: a string made with maximum character 127 is a compact ASCII string whose
    // `len` bytes of storage follow its header (the trailing NUL is written by
    // PyUnicode_New); every byte copied in is below 128, as the kind promises.
    unsafe {
        let p = pyo3::ffi::PyUnicode_New(s.len() as pyo3::ffi::Py_ssize_t, 127);
        if p.is_null() {
            return Err(PyErr::fetch(py));
        }
        std::ptr::copy_nonoverlapping(s.as_ptr(), pyo3::ffi::PyUnicode_1BYTE_DATA(p), s.len());
        Ok(Bound::from_owned_ptr(py, p))
    }
}

pub fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Float(f) => f.into_pyobject(py)?.into_any(),
        Value::Text(s) => py_str(py, s)?,
        Value::Bytes(b) => PyBytes::new(py, b).into_any(),
        Value::Json(j) => json_to_py(py, j)?,
        Value::Date(d) => d.into_pyobject(py)?.into_any(),
        Value::Time(t) => t.into_pyobject(py)?.into_any(),
        Value::DateTime(t) => t.into_pyobject(py)?.into_any(),
        Value::DateTimeTz(t) => t.into_pyobject(py)?.into_any(),
        Value::List(items) => {
            PyList::new(py, items.iter().map(|v| to_py(py, v)).collect::<PyResult<Vec<_>>>()?)?.into_any()
        }
        Value::Decimal(d) => {
            static DECIMAL: pyo3::sync::PyOnceLock<Py<pyo3::types::PyType>> = pyo3::sync::PyOnceLock::new();
            DECIMAL.import(py, "decimal", "Decimal")?.call1((d.as_str(),))?
        }
    })
}
