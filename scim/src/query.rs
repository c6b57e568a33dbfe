//! Filters planned into SQL, so a list is filtered by the database and not
//! by loading a tenant's resources into memory. The store says where each
//! attribute lives ([`Mapping`]); the planner writes a `WHERE` condition
//! with numbered parameters (`$n`, which SQLite and PostgreSQL both read)
//! and the values to bind. No client text is ever put into the SQL: names
//! reach it only through the mapping, values only as parameters.

use crate::error::{ScimError, ScimType};
use crate::filter::{CompareOp, Filter, Literal};
use crate::path::AttrPath;

/// The SQL dialect (a few functions differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// How one attribute is stored: an SQL expression and how to compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    /// Text compared ignoring case; the expression holds it lower-cased.
    Folded(String),
    /// Text compared exactly.
    Exact(String),
    /// 0 or 1.
    Bool(String),
    /// Unix milliseconds, compared with RFC 3339 date-times.
    TimeMs(String),
    /// Folded text with a trigram index beside it: `grams` is a condition
    /// with `{}` where a `LIKE` pattern goes, true of a superset of the
    /// rows whose `expr` is like it, found through the index. `co`, `sw`
    /// and `ew` with at least three plain characters go through it.
    Grams { expr: String, grams: String },
}

impl Column {
    /// The expression holding the value.
    pub fn expr(&self) -> &str {
        match self {
            Column::Folded(e) | Column::Exact(e) | Column::Bool(e) | Column::TimeMs(e) => e,
            Column::Grams { expr, .. } => expr,
        }
    }
}

/// A multi-valued attribute kept in rows of its own: `opening` opens a
/// subquery over its elements, `EXISTS (SELECT 1 FROM ... WHERE
/// <correlation>` or `r.id IN (SELECT e.owner FROM ... WHERE ...`, to which
/// the planner adds `AND` the conditions on the element's sub-attributes,
/// and `closing` (`)`, or what else must end it, say an `OFFSET 0)` that
/// keeps PostgreSQL from merging the subquery into the outer query). (An
/// `IN` over an uncorrelated subquery lets the database start from the few
/// matching elements instead of probing per resource.)
#[derive(Debug, Clone)]
pub struct MultiValued {
    pub opening: String,
    pub closing: &'static str,
    /// The sub-attribute a path without one names (`value`).
    pub default_sub: &'static str,
}

/// Where a resource type's attributes are.
pub trait Mapping {
    /// A single-valued attribute or sub-attribute (`userName`,
    /// `name.familyName`, `meta.lastModified`).
    fn single(&self, path: &AttrPath) -> Option<Column>;
    /// A multi-valued attribute (`emails`), by its name and URI.
    fn multi(&self, path: &AttrPath) -> Option<MultiValued>;
    /// A sub-attribute of an element of the multi-valued `attr`.
    fn element(&self, attr: &AttrPath, sub: &str) -> Option<Column>;
}

/// A value to bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Text(String),
    Int(i64),
}

/// A planned condition: SQL with `$first..` parameters and their values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub sql: String,
    pub binds: Vec<Bind>,
}

fn invalid(detail: impl Into<String>) -> ScimError {
    ScimError::typed(ScimType::InvalidFilter, detail)
}

struct Planner<'a> {
    mapping: &'a dyn Mapping,
    dialect: Dialect,
    first: usize,
    binds: Vec<Bind>,
}

/// Plans `filter` into a condition whose parameters start at `$first`.
pub fn plan(filter: &Filter, mapping: &dyn Mapping, dialect: Dialect, first: usize) -> Result<Condition, ScimError> {
    let mut planner = Planner { mapping, dialect, first, binds: Vec::new() };
    let sql = planner.filter(filter, None)?;
    Ok(Condition { sql, binds: planner.binds })
}

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern.
fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// RFC 3339 to unix milliseconds.
pub fn parse_time_ms(text: &str) -> Option<i64> {
    // `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]`, parsed by hand to keep the
    // crate free of a date library.
    let b = text.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &frac[..digits.min(3)]);
        millis = padded.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) && &tz[3..4] == ":" => {
            let h: i64 = tz[1..3].parse().ok()?;
            let m: i64 = tz[4..6].parse().ok()?;
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1000 + millis)
}

/// The year, month and day of a day counted from 1970-01-01 (negative
/// before it), in the proleptic Gregorian calendar (Howard Hinnant's
/// `civil_from_days`).
pub fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Unix milliseconds as RFC 3339 (UTC, with milliseconds).
pub fn format_time_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let (year, month, day) = civil_date(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

impl Planner<'_> {
    fn bind(&mut self, value: Bind) -> String {
        self.binds.push(value);
        format!("${}", self.first + self.binds.len() - 1)
    }

    /// `within` is the multi-valued attribute whose elements the filter's
    /// paths name (inside a value filter).
    fn filter(&mut self, filter: &Filter, within: Option<&AttrPath>) -> Result<String, ScimError> {
        Ok(match filter {
            Filter::And(a, b) => format!("({} AND {})", self.filter(a, within)?, self.filter(b, within)?),
            Filter::Or(a, b) => format!("({} OR {})", self.filter(a, within)?, self.filter(b, within)?),
            // NULL (an absent attribute) compares to nothing: `not` of it holds.
            Filter::Not(inner) => format!("(NOT COALESCE({}, FALSE))", self.filter(inner, within)?),
            Filter::Has { attr, filter } => {
                if within.is_some() {
                    return Err(invalid("value filters do not nest"));
                }
                let multi = self.multi(attr)?;
                format!("{} AND {}{}", multi.opening, self.filter(filter, Some(attr))?, multi.closing)
            }
            Filter::Present(path) => self.present(path, within)?,
            Filter::Compare(path, op, literal) => self.compare(path, *op, literal, within)?,
        })
    }

    fn multi(&self, attr: &AttrPath) -> Result<MultiValued, ScimError> {
        self.mapping
            .multi(attr)
            .ok_or_else(|| invalid(format!("`{attr}` is not a multi-valued attribute to filter on")))
    }

    /// Where the values at `path` are: a column of the resource, or of an
    /// element (with the subquery opening it needs, when not already within).
    fn locate(&self, path: &AttrPath, within: Option<&AttrPath>) -> Result<(Option<MultiValued>, Column), ScimError> {
        let unknown = || invalid(format!("`{path}` is not an attribute that can be filtered on"));
        if let Some(attr) = within {
            if path.uri.is_some() || path.sub.is_some() {
                return Err(invalid(format!("`{path}` is not a sub-attribute of `{attr}`")));
            }
            return Ok((None, self.mapping.element(attr, &path.attr).ok_or_else(unknown)?));
        }
        let top = AttrPath { uri: path.uri.clone(), attr: path.attr.clone(), sub: None };
        if let Some(multi) = self.mapping.multi(&top) {
            let sub = path.sub.as_deref().unwrap_or(multi.default_sub);
            let column = self.mapping.element(&top, sub).ok_or_else(unknown)?;
            return Ok((Some(multi), column));
        }
        Ok((None, self.mapping.single(path).ok_or_else(unknown)?))
    }

    fn present(&mut self, path: &AttrPath, within: Option<&AttrPath>) -> Result<String, ScimError> {
        if within.is_none() && path.sub.is_none() {
            let top = AttrPath { uri: path.uri.clone(), attr: path.attr.clone(), sub: None };
            if let Some(multi) = self.mapping.multi(&top) {
                return Ok(format!("{}{}", multi.opening, multi.closing));
            }
        }
        let (opening, column) = self.locate(path, within)?;
        let condition = match &column {
            Column::Folded(e) | Column::Exact(e) | Column::Grams { expr: e, .. } => {
                format!("({e} IS NOT NULL AND {e} <> '')")
            }
            Column::Bool(e) | Column::TimeMs(e) => format!("({e} IS NOT NULL)"),
        };
        Ok(wrap(opening, condition))
    }

    fn compare(
        &mut self,
        path: &AttrPath,
        op: CompareOp,
        literal: &Literal,
        within: Option<&AttrPath>,
    ) -> Result<String, ScimError> {
        let (opening, column) = self.locate(path, within)?;
        // `ne` of a multi-valued attribute: no element equals it.
        if let (Some(multi), CompareOp::Ne) = (&opening, op) {
            let equal = self.condition(&column, CompareOp::Eq, literal, path)?;
            return Ok(format!("(NOT {} AND {equal}{})", multi.opening, multi.closing));
        }
        let condition = self.condition(&column, op, literal, path)?;
        Ok(wrap(opening, condition))
    }

    fn condition(
        &mut self,
        column: &Column,
        op: CompareOp,
        literal: &Literal,
        path: &AttrPath,
    ) -> Result<String, ScimError> {
        let expr = column.expr().to_owned();
        if *literal == Literal::Null {
            let text = !matches!(column, Column::Bool(_) | Column::TimeMs(_));
            return Ok(match (op, text) {
                (CompareOp::Eq, true) => format!("({expr} IS NULL OR {expr} = '')"),
                (CompareOp::Eq, false) => format!("({expr} IS NULL)"),
                (_, true) => format!("({expr} IS NOT NULL AND {expr} <> '')"),
                (_, false) => format!("({expr} IS NOT NULL)"),
            });
        }
        let ordering = |op: CompareOp| match op {
            CompareOp::Gt => Some(">"),
            CompareOp::Ge => Some(">="),
            CompareOp::Lt => Some("<"),
            CompareOp::Le => Some("<="),
            CompareOp::Eq => Some("="),
            _ => None,
        };
        match column {
            Column::Folded(_) | Column::Exact(_) | Column::Grams { .. } => {
                let Literal::Str(text) = literal else {
                    // A number or boolean never equals a string attribute.
                    return Ok(if op == CompareOp::Ne { "(1 = 1)".into() } else { "(1 = 0)".into() });
                };
                let folded = !matches!(column, Column::Exact(_));
                let text = if folded { text.to_lowercase() } else { text.clone() };
                if op == CompareOp::Ne {
                    let p = self.bind(Bind::Text(text));
                    return Ok(format!("({expr} IS NULL OR {expr} <> {p})"));
                }
                if let Some(sym) = ordering(op) {
                    let p = self.bind(Bind::Text(text));
                    return Ok(format!("({expr} {sym} {p})"));
                }
                let plain = text.chars().count() >= 3 && !text.contains(['%', '_', '\\']);
                if let (Column::Grams { grams, .. }, true) = (column, plain) {
                    // No wildcard to escape: the trigram index can take the pattern.
                    let pattern = match op {
                        CompareOp::Co => format!("%{text}%"),
                        CompareOp::Sw => format!("{text}%"),
                        _ => format!("%{text}"),
                    };
                    let p = self.bind(Bind::Text(pattern));
                    return Ok(format!("({} AND {expr} LIKE {p})", grams.replace("{}", &p)));
                }
                if folded {
                    let pattern = match op {
                        CompareOp::Co => format!("%{}%", like_escape(&text)),
                        CompareOp::Sw => format!("{}%", like_escape(&text)),
                        _ => format!("%{}", like_escape(&text)),
                    };
                    let p = self.bind(Bind::Text(pattern));
                    return Ok(format!("({expr} LIKE {p} ESCAPE '\\')"));
                }
                // Exact: without LIKE, which ignores case on SQLite.
                let p = self.bind(Bind::Text(text));
                Ok(match (op, self.dialect) {
                    (CompareOp::Co, Dialect::Sqlite) => format!("(instr({expr}, {p}) > 0)"),
                    (CompareOp::Co, Dialect::Postgres) => format!("(strpos({expr}, {p}) > 0)"),
                    (CompareOp::Sw, _) => format!("(substr({expr}, 1, length({p})) = {p})"),
                    _ => format!(
                        "(length({expr}) >= length({p}) AND substr({expr}, length({expr}) - length({p}) + 1) = {p})"
                    ),
                })
            }
            Column::Bool(_) => {
                let Literal::Bool(b) = literal else {
                    return Err(invalid(format!("`{path}` is a boolean")));
                };
                let p = self.bind(Bind::Int(i64::from(*b)));
                Ok(match op {
                    CompareOp::Eq => format!("({expr} = {p})"),
                    CompareOp::Ne => format!("({expr} <> {p})"),
                    _ => return Err(invalid(format!("`{path}` compares with `eq` and `ne` only"))),
                })
            }
            Column::TimeMs(_) => {
                let Literal::Str(text) = literal else {
                    return Err(invalid(format!("`{path}` is a date-time: compare it with an RFC 3339 string")));
                };
                let ms =
                    parse_time_ms(text).ok_or_else(|| invalid(format!("`{text}` is not an RFC 3339 date-time")))?;
                if op == CompareOp::Ne {
                    let p = self.bind(Bind::Int(ms));
                    return Ok(format!("({expr} <> {p})"));
                }
                let sym = ordering(op)
                    .ok_or_else(|| invalid(format!("`{path}` is a date-time: `co`, `sw` and `ew` do not apply")))?;
                let p = self.bind(Bind::Int(ms));
                Ok(format!("({expr} {sym} {p})"))
            }
        }
    }
}

fn wrap(opening: Option<MultiValued>, condition: String) -> String {
    match opening {
        Some(multi) => format!("{} AND {condition}{}", multi.opening, multi.closing),
        None => condition,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::parse;

    struct Users;

    impl Mapping for Users {
        fn single(&self, path: &AttrPath) -> Option<Column> {
            Some(match (path.attr.to_ascii_lowercase().as_str(), path.sub.as_deref()) {
                ("username", None) => Column::Folded("u.user_name_lower".into()),
                ("externalid", None) => Column::Exact("u.external_id".into()),
                ("active", None) => Column::Bool("u.active".into()),
                ("meta", Some(s)) if s.eq_ignore_ascii_case("lastModified") => Column::TimeMs("u.modified_ms".into()),
                _ => return None,
            })
        }
        fn multi(&self, path: &AttrPath) -> Option<MultiValued> {
            path.is("emails").then(|| MultiValued {
                opening: "EXISTS (SELECT 1 FROM v WHERE v.id = u.id AND v.attr = 'emails'".into(),
                closing: ")",
                default_sub: "value",
            })
        }
        fn element(&self, _attr: &AttrPath, sub: &str) -> Option<Column> {
            match sub.to_ascii_lowercase().as_str() {
                "value" => Some(Column::Folded("v.value_lower".into())),
                "type" => Some(Column::Folded("v.type_lower".into())),
                "primary" => Some(Column::Bool("v.is_primary".into())),
                _ => None,
            }
        }
    }

    fn planned(filter: &str) -> Condition {
        plan(&parse(filter).unwrap(), &Users, Dialect::Sqlite, 2).unwrap()
    }

    #[test]
    fn comparisons_become_parameters() {
        let c = planned(r#"userName eq "BJensen""#);
        assert_eq!(c.sql, "(u.user_name_lower = $2)");
        assert_eq!(c.binds, vec![Bind::Text("bjensen".into())]);
        let c = planned(r#"userName co "50%_\\x" and externalId sw "Ab""#);
        assert_eq!(c.sql, "((u.user_name_lower LIKE $2 ESCAPE '\\') AND (substr(u.external_id, 1, length($3)) = $3))");
        assert_eq!(c.binds, vec![Bind::Text("%50\\%\\_\\\\x%".into()), Bind::Text("Ab".into())]);
        let c = planned(r#"meta.lastModified gt "2026-05-13T04:42:34.5Z""#);
        assert_eq!(c.binds, vec![Bind::Int(1_778_647_354_500)]);
        let c = planned(r#"emails[type eq "work"].value co "@EXAMPLE.com""#);
        assert_eq!(
            c.sql,
            "EXISTS (SELECT 1 FROM v WHERE v.id = u.id AND v.attr = 'emails' AND ((v.type_lower = $2) AND \
             (v.value_lower LIKE $3 ESCAPE '\\')))"
        );
        let c = planned(r#"emails ne "a@b" or not (active eq true)"#);
        assert!(c.sql.contains("NOT EXISTS") && c.sql.contains("NOT COALESCE"), "{}", c.sql);
        assert_eq!(planned("emails pr").sql, "EXISTS (SELECT 1 FROM v WHERE v.id = u.id AND v.attr = 'emails')");
    }

    #[test]
    fn substrings_of_indexed_values_go_through_the_trigrams() {
        struct Indexed;
        impl Mapping for Indexed {
            fn single(&self, _: &AttrPath) -> Option<Column> {
                None
            }
            fn multi(&self, path: &AttrPath) -> Option<MultiValued> {
                path.is("emails").then(|| MultiValued {
                    opening: "u.id IN (SELECT v.u FROM v WHERE 1 = 1".into(),
                    closing: ")",
                    default_sub: "value",
                })
            }
            fn element(&self, _: &AttrPath, _: &str) -> Option<Column> {
                Some(Column::Grams {
                    expr: "v.value_lower".into(),
                    grams: "v.rowid IN (SELECT rowid FROM g WHERE g.value_lower LIKE {})".into(),
                })
            }
        }
        let planned = |f: &str| plan(&parse(f).unwrap(), &Indexed, Dialect::Sqlite, 2).unwrap();
        let c = planned(r#"emails.value co "@Corp7.test""#);
        assert_eq!(
            c.sql,
            "u.id IN (SELECT v.u FROM v WHERE 1 = 1 AND (v.rowid IN (SELECT rowid FROM g WHERE g.value_lower LIKE $2) \
             AND v.value_lower LIKE $2))"
        );
        assert_eq!(c.binds, vec![Bind::Text("%@corp7.test%".into())]);
        // Too short, or holding a wildcard: the plain, escaped `LIKE`.
        for (f, pattern) in [(r#"emails.value sw "ab""#, "ab%"), (r#"emails.value ew "a_b""#, "%a\\_b")] {
            let c = planned(f);
            assert!(c.sql.contains("ESCAPE") && !c.sql.contains("rowid"), "{f}: {}", c.sql);
            assert_eq!(c.binds, vec![Bind::Text(pattern.into())], "{f}");
        }
    }

    #[test]
    fn what_cannot_be_planned_is_invalid_filter() {
        for bad in [
            r#"nickName eq "x""#,
            r#"active gt "x""#,
            r#"meta.lastModified gt "yesterday""#,
            r#"meta.lastModified co "2026""#,
            r#"userName[value eq "x"]"#,
            r#"emails[type.x eq "work"]"#,
        ] {
            let err = plan(&parse(bad).unwrap(), &Users, Dialect::Postgres, 1).unwrap_err();
            assert_eq!(err.scim_type, Some(ScimType::InvalidFilter), "{bad}");
        }
    }

    #[test]
    fn times_round_trip() {
        for (text, ms) in [
            ("1970-01-01T00:00:00.000Z", 0),
            ("2026-05-13T04:42:34.500Z", 1_778_647_354_500),
            ("2000-02-29T23:59:59.999Z", 951_868_799_999),
        ] {
            assert_eq!(parse_time_ms(text), Some(ms), "{text}");
            assert_eq!(format_time_ms(ms), text);
        }
        assert_eq!(parse_time_ms("2026-05-13T06:42:34+02:00"), Some(1_778_647_354_000));
        for bad in ["2026-13-01T00:00:00Z", "2026-05-13", "2026-05-13T04:42:34", "x"] {
            assert_eq!(parse_time_ms(bad), None, "{bad}");
        }
    }
}
