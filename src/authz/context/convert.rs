//! The JSON a client sends for Cedar's `decimal` and `datetime`, in the forms Cedar
//! reads: a JSON number for a `decimal` becomes its decimal text (`12.5`), and an
//! RFC 3339 date-time's offset `+05:30` becomes `+0530`, its `t`/`z` upper case, its
//! fraction of a second three digits. What Cedar cannot hold is an error (a deny):
//! more than 4 decimal places or out of a decimal's range, a time finer than a
//! millisecond.

use std::borrow::Cow;

use serde_json::{Number, Value};

use crate::policy::{Extension, Leaf, Shape};

/// `value` with the numbers of its `decimal` attributes as decimal text and the
/// date-times of its `datetime` attributes in Cedar's form (see the module), or the
/// path of the first value Cedar could not hold and why. Values of other kinds
/// than declared are left for the caller to refuse.
pub fn convert(shape: &Shape, value: Value) -> Result<Value, String> {
    convert_at(shape, value, "")
}

fn convert_at(shape: &Shape, value: Value, path: &str) -> Result<Value, String> {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match (shape, value) {
        (Shape::Record(attrs), Value::Object(obj))
            if !obj.contains_key("__entity") && !obj.contains_key("__extn") =>
        {
            let mut out = serde_json::Map::with_capacity(obj.len());
            for (k, v) in obj {
                let v = match attrs.get(&k) {
                    Some(s) => convert_at(s, v, &join(&k))?,
                    None => v,
                };
                out.insert(k, v);
            }
            Ok(Value::Object(out))
        }
        (Shape::Set(inner), Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| convert_at(inner, v, &format!("{path}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        (Shape::Leaf(Leaf::Extension(Some(Extension::Decimal))), Value::Number(n)) => {
            decimal_text(&n).map(Value::String).ok_or_else(|| {
                format!(
                    "`{path}` is a number that a Cedar decimal cannot hold (at most 4 decimal \
                     places, between -922337203685477.5808 and 922337203685477.5807)"
                )
            })
        }
        (Shape::Leaf(Leaf::Extension(Some(Extension::Datetime))), Value::String(s)) => {
            let text = match datetime_text(&s) {
                Ok(Cow::Borrowed(_)) => s,
                Ok(Cow::Owned(t)) => t,
                Err(why) => return Err(format!("`{path}` {why}")),
            };
            if datetime_form(&text) {
                Ok(Value::String(text))
            } else {
                Err(format!(
                    "`{path}` is not a datetime: write RFC 3339 (`2026-01-01T09:30:00Z`, \
                     `2026-01-01T09:30:00+02:00`) or a date (`2026-01-01`)"
                ))
            }
        }
        (_, v) => Ok(v),
    }
}

/// Largest exponent of a JSON number looked at: beyond it a number is out of a
/// decimal's range or has too many places anyway.
const MAX_EXPONENT: i32 = 40;

/// The decimal text (`-12.5`) of a JSON number when a Cedar decimal holds it exactly:
/// at most 4 decimal places, within the range of an `i64` of ten-thousandths.
pub fn decimal_text(n: &Number) -> Option<String> {
    let text = n.to_string();
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.trim_start_matches('+').parse::<i32>().ok()?),
        None => (text.as_str(), 0),
    };
    if exponent.abs() > MAX_EXPONENT {
        return None;
    }
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits = format!("{int}{frac}");
    let mut point = i32::try_from(int.len()).ok()? + exponent;
    if point < 0 {
        digits.insert_str(0, &"0".repeat(usize::try_from(-point).ok()?));
        point = 0;
    }
    let point = usize::try_from(point).ok()?;
    if point > digits.len() {
        digits.push_str(&"0".repeat(point - digits.len()));
    }
    let (int, frac) = digits.split_at_checked(point)?;
    let frac = frac.trim_end_matches('0');
    if frac.len() > 4 {
        return None;
    }
    let int = int.trim_start_matches('0');
    let whole: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let parts: i128 = format!("{frac:0<4}").parse().ok()?;
    let scaled = whole.checked_mul(10_000)?.checked_add(parts)?;
    let limit = if negative {
        i128::from(i64::MAX) + 1
    } else {
        i128::from(i64::MAX)
    };
    if scaled > limit {
        return None;
    }
    let sign = if negative && scaled != 0 { "-" } else { "" };
    let int = if int.is_empty() { "0" } else { int };
    let frac = if frac.is_empty() { "0" } else { frac };
    Some(format!("{sign}{int}.{frac}"))
}

/// An RFC 3339 date-time in the form Cedar's `datetime` reads (see the module); other
/// text is returned unchanged for Cedar to accept or refuse. An error (a reason
/// fragment) for a time finer than a millisecond, which Cedar cannot hold.
pub fn datetime_text(s: &str) -> Result<Cow<'_, str>, &'static str> {
    let unchanged = Ok(Cow::Borrowed(s));
    let Some((date, rest)) = s.split_at_checked(10) else {
        return unchanged;
    };
    let Some(rest) = rest.strip_prefix(['T', 't']) else {
        return unchanged;
    };
    let Some((time, rest)) = rest.split_at_checked(8) else {
        return unchanged;
    };
    let (fraction, offset) = match rest.strip_prefix('.') {
        Some(r) => {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            let (f, o) = r.split_at_checked(end).unwrap_or((r, ""));
            if f.is_empty() {
                return unchanged;
            }
            (Some(f), o)
        }
        None => (None, rest),
    };
    let fraction = match fraction {
        None => String::new(),
        Some(f) if f.len() <= 3 => format!(".{f:0<3}"),
        Some(f) => {
            let (ms, finer) = f.split_at_checked(3).unwrap_or((f, ""));
            if finer.bytes().any(|b| b != b'0') {
                return Err(
                    "is a time finer than a millisecond, which a Cedar datetime cannot hold",
                );
            }
            format!(".{ms}")
        }
    };
    let offset = match offset {
        "Z" | "z" => Cow::Borrowed("Z"),
        o if o.len() == 6 && o.as_bytes().get(3) == Some(&b':') => {
            Cow::Owned(o.replacen(':', "", 1))
        }
        o => Cow::Borrowed(o),
    };
    let normal = format!("{date}T{time}{fraction}{offset}");
    Ok(if normal == s {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(normal)
    })
}

/// Whether `s` has one of the forms of Cedar's `datetime`: `YYYY-MM-DD`, or that,
/// `Thh:mm:ss`, optionally `.SSS`, then `Z` or `+hhmm`/`-hhmm` (the values' ranges are
/// Cedar's to check).
fn datetime_form(s: &str) -> bool {
    /// `d` a digit, `+` a sign, anything else itself.
    const FORMS: [&str; 5] = [
        "dddd-dd-dd",
        "dddd-dd-ddTdd:dd:ddZ",
        "dddd-dd-ddTdd:dd:dd.dddZ",
        "dddd-dd-ddTdd:dd:dd+dddd",
        "dddd-dd-ddTdd:dd:dd.ddd+dddd",
    ];
    FORMS.iter().any(|form| {
        form.len() == s.len()
            && form.bytes().zip(s.bytes()).all(|(f, c)| match f {
                b'd' => c.is_ascii_digit(),
                b'+' => matches!(c, b'+' | b'-'),
                _ => f == c,
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(json: &str) -> Option<String> {
        let n: Number = serde_json::from_str(json).expect("number");
        decimal_text(&n)
    }

    #[test]
    fn json_numbers_become_decimal_text_when_a_decimal_holds_them() {
        assert_eq!(dec("12").as_deref(), Some("12.0"));
        assert_eq!(dec("12.5").as_deref(), Some("12.5"));
        assert_eq!(dec("-0.0001").as_deref(), Some("-0.0001"));
        assert_eq!(dec("1e3").as_deref(), Some("1000.0"));
        assert_eq!(dec("1.25e-2").as_deref(), Some("0.0125"));
        assert_eq!(dec("-0.0").as_deref(), Some("0.0"));
        assert_eq!(dec("922337203685477").as_deref(), Some("922337203685477.0"));
        // Too many places, out of range, absurd exponents: not held.
        assert_eq!(dec("0.00001"), None);
        assert_eq!(dec("12.34567"), None);
        assert_eq!(dec("922337203685478"), None);
        assert_eq!(dec("-922337203685478"), None);
        assert_eq!(dec("1e300"), None);
        assert_eq!(dec("1e-300"), None);
        assert_eq!(dec("18446744073709551615"), None);
        // Every produced text is a decimal Cedar reads.
        for json in ["12", "12.5", "-0.0001", "1e3", "1.25e-2", "922337203685477"] {
            let text = dec(json).expect("held");
            let d = cedar_policy::RestrictedExpression::new_decimal(text.clone());
            assert!(
                cedar_policy::Context::from_pairs([("d".to_owned(), d)]).is_ok(),
                "{text}"
            );
            let bad = cedar_policy::RestrictedExpression::new_decimal("0.00001");
            assert!(cedar_policy::Context::from_pairs([("d".to_owned(), bad)]).is_err());
        }
    }

    #[test]
    fn only_cedars_datetime_forms_pass_and_others_name_the_argument() {
        for ok in [
            "2026-01-01",
            "2026-01-01T09:30:00Z",
            "2026-01-01T09:30:00.120Z",
            "2026-01-01T09:30:00+0530",
            "2026-01-01T09:30:00.1-0100",
            "2026-01-01t09:30:00+05:30",
        ] {
            let text = datetime_text(ok).expect("converts");
            assert!(datetime_form(&text), "{ok} -> {text}");
        }
        for bad in [
            "yesterday",
            "",
            "2026-1-01",
            "2026-01-01T09:30Z",
            "2026-01-01T09:30:00",
            "2026-01-01T09:30:00+5",
            "2026-01-01 09:30:00Z",
            "２０２６-01-01",
        ] {
            let text = datetime_text(bad).unwrap_or(Cow::Borrowed(bad));
            assert!(!datetime_form(&text), "{bad}");
        }
        let shape = Shape::Leaf(Leaf::Extension(Some(Extension::Datetime)));
        let err = convert_at(&shape, Value::String("yesterday".into()), "arguments.since")
            .expect_err("not a datetime");
        assert!(
            err.starts_with("`arguments.since` is not a datetime"),
            "{err}"
        );
    }

    #[test]
    fn rfc_3339_date_times_take_cedars_form() {
        let dt = |s| datetime_text(s).map(Cow::into_owned);
        assert_eq!(dt("2026-12-01").as_deref(), Ok("2026-12-01"));
        assert_eq!(
            dt("2026-12-01T18:08:06Z").as_deref(),
            Ok("2026-12-01T18:08:06Z")
        );
        assert_eq!(
            dt("2026-12-01t18:08:06+05:30").as_deref(),
            Ok("2026-12-01T18:08:06+0530")
        );
        assert_eq!(
            dt("2026-12-01T18:08:06.5-01:00").as_deref(),
            Ok("2026-12-01T18:08:06.500-0100")
        );
        assert_eq!(
            dt("2026-12-01T18:08:06.123000z").as_deref(),
            Ok("2026-12-01T18:08:06.123Z")
        );
        assert!(dt("2026-12-01T18:08:06.123456Z").is_err());
        // Not a date-time: unchanged, for Cedar to refuse.
        assert_eq!(dt("soon").as_deref(), Ok("soon"));
    }
}
