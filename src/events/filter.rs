//! Pull filters: `field comparison value` over event columns or `data.<path>` JSON paths.
//! Parsing turns client text into a closed set of columns and operators; the SQL built from
//! a [`Filter`] binds every value, so no client text is ever pasted into a query.

use super::model::parse_time;
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder};

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// ==
    Eq,
    /// !=
    Ne,
    /// >
    Gt,
    /// >=
    Ge,
    /// <
    Lt,
    /// <=
    Le,
}

impl Op {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "==" | "=" | "eq" | "equal" | "equals" => Op::Eq,
            "!=" | "<>" | "ne" | "not_equal" => Op::Ne,
            ">" | "gt" | "greater_than" => Op::Gt,
            ">=" | "gte" | "ge" | "greater_than_or_equal" => Op::Ge,
            "<" | "lt" | "less_than" => Op::Lt,
            "<=" | "lte" | "le" | "less_than_or_equal" => Op::Le,
            other => {
                return Err(Error::invalid(format!(
                    "unknown comparison {other:?}: use ==, !=, >, >=, <, <="
                )));
            }
        })
    }

    fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }
}

/// What a filter compares, with its value already parsed to the column's type.
#[derive(Clone, Debug, PartialEq)]
enum Target {
    Text(&'static str, String),
    Offset(i64),
    Time(DateTime<Utc>),
    Id(uuid::Uuid),
    /// A JSON path into `data`, compared as text, or numerically when the value is a number.
    Data(Vec<String>, String),
}

/// A parsed filter.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    target: Target,
    op: Op,
}

const TEXT_COLUMNS: [&str; 7] = [
    "name",
    "source",
    "group_key",
    "reference_key",
    "trace_key",
    "user_id",
    "anonymous_id",
];
const MAX_PATH_DEPTH: usize = 16;
/// Most filters in one pull or stream: each is a condition Postgres evaluates on every row a
/// read scans. Ten is more than any use seen (the admin UI offers three).
pub const MAX_FILTERS: usize = 10;

/// Parses the filters of one pull or stream, `(field, comparison, value)` each; more than
/// [`MAX_FILTERS`] is refused before any is parsed.
pub fn parse_filters<'a>(
    filters: impl ExactSizeIterator<Item = (&'a str, &'a str, &'a str)>,
) -> Result<Vec<Filter>> {
    if filters.len() > MAX_FILTERS {
        return Err(Error::invalid(format!(
            "too many filters: {}, at most {MAX_FILTERS} allowed",
            filters.len()
        )));
    }
    filters.map(|(f, c, v)| Filter::parse(f, c, v)).collect()
}

impl Filter {
    /// Parses a filter from the wire; every mistake is INVALID_ARGUMENT naming the filter.
    pub fn parse(field: &str, comparison: &str, value: &str) -> Result<Self> {
        let op = Op::parse(comparison)?;
        let bad = |what: &str| Error::invalid(format!("filter on {field:?}: {what}"));
        let target = if let Some(path) = field.strip_prefix("data.") {
            let segs: Vec<String> = path.split('.').map(str::to_owned).collect();
            if segs.iter().any(String::is_empty) || segs.len() > MAX_PATH_DEPTH {
                return Err(bad("data path must be data.<key>[.<key>...]"));
            }
            Target::Data(segs, value.to_owned())
        } else if let Some(col) = TEXT_COLUMNS.iter().find(|c| **c == field) {
            Target::Text(col, value.to_owned())
        } else {
            match field {
                "offset" => {
                    Target::Offset(value.parse().map_err(|_| bad("value must be an integer"))?)
                }
                "occurred_at" => Target::Time(
                    parse_time(value).ok_or_else(|| bad("value must be an ISO-8601 time"))?,
                ),
                "id" => {
                    if !matches!(op, Op::Eq | Op::Ne) {
                        return Err(bad("ids compare only with == or !="));
                    }
                    Target::Id(
                        uuid::Uuid::parse_str(value).map_err(|_| bad("value must be a UUID"))?,
                    )
                }
                _ => {
                    return Err(Error::invalid(format!(
                        "unknown filter field {field:?}: use one of {}, offset, occurred_at, id or data.<path>",
                        TEXT_COLUMNS.join(", ")
                    )));
                }
            }
        };
        Ok(Filter { target, op })
    }

    /// Appends ` AND <condition>` with bound values.
    pub fn push_sql(&self, qb: &mut QueryBuilder<Postgres>) {
        let op = self.op.sql();
        qb.push(" AND ");
        match &self.target {
            Target::Text(col, v) => {
                qb.push(format!("{col} {op} ")).push_bind(v.clone());
            }
            Target::Offset(v) => {
                qb.push(format!("\"offset\" {op} ")).push_bind(*v);
            }
            Target::Time(v) => {
                qb.push(format!("occurred_at {op} ")).push_bind(*v);
            }
            Target::Id(v) => {
                qb.push(format!("id {op} ")).push_bind(*v);
            }
            Target::Data(path, v) => {
                let ordering = !matches!(self.op, Op::Eq | Op::Ne);
                match v.parse::<f64>() {
                    Ok(n) if ordering && n.is_finite() => {
                        // CASE keeps the numeric cast away from non-numbers.
                        qb.push("(CASE WHEN jsonb_typeof(data #> ")
                            .push_bind(path.clone())
                            .push("::text[]) = 'number' THEN (data #>> ")
                            .push_bind(path.clone())
                            .push(format!("::text[])::numeric END) {op} "))
                            .push_bind(n)
                            .push("::numeric");
                    }
                    _ => {
                        // Text form matches 1 and "1" alike; a missing path never matches.
                        qb.push("(data #>> ")
                            .push_bind(path.clone())
                            .push(format!("::text[]) {op} "))
                            .push_bind(v.clone());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let ok = [
            ("name", "==", "user.created"),
            ("user_id", "!=", "1"),
            ("offset", ">", "10"),
            ("occurred_at", "<=", "2020-01-01T00:00:00Z"),
            ("data.first_name", "equal", "Thomas"),
            ("data.a.b", ">=", "3.5"),
            ("id", "==", "04f7f9b0-5b9b-11eb-9e8b-0f1f9b4f4a9c"),
        ];
        for (f, c, v) in ok {
            assert!(Filter::parse(f, c, v).is_ok(), "{f} {c} {v}");
        }
        let bad = [
            ("name; drop table topics", "==", "x"),
            ("data.", "==", "x"),
            ("data..a", "==", "x"),
            ("offset", "==", "ten"),
            ("occurred_at", ">", "yesterday"),
            ("name", "like", "x"),
            ("id", ">", "04f7f9b0-5b9b-11eb-9e8b-0f1f9b4f4a9c"),
            ("id", "==", "nope"),
        ];
        for (f, c, v) in bad {
            let e = Filter::parse(f, c, v).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{f} {c} {v}");
        }
    }

    fn sql(f: &Filter) -> String {
        let mut qb = QueryBuilder::<Postgres>::new("SELECT 1 WHERE true");
        f.push_sql(&mut qb);
        qb.sql().as_str().to_owned()
    }

    proptest::proptest! {
        #[test]
        fn client_text_never_reaches_the_sql(
            field in "(name|source|user_id|data\\.[a-z]{1,5}(\\.[a-z0-9]{1,5}){0,3})",
            other in "(name|source|user_id|data\\.[a-z]{1,5}(\\.[a-z0-9]{1,5}){0,3})",
            op in "(==|!=|>|>=|<|<=|eq|ne)",
            v1 in "\\PC*",
            v2 in "\\PC*",
        ) {
            proptest::prop_assume!(v1.parse::<f64>().is_err() && v2.parse::<f64>().is_err());
            let a = Filter::parse(&field, &op, &v1).unwrap();
            let b = Filter::parse(&field, &op, &v2).unwrap();
            // Same shape whatever the value: values are binds, never text in the query.
            proptest::prop_assert_eq!(sql(&a), sql(&b));
            if field.starts_with("data.") && other.starts_with("data.") {
                // The path is a bind too.
                let c = Filter::parse(&other, &op, &v1).unwrap();
                proptest::prop_assert_eq!(sql(&a), sql(&c));
            }
        }

        #[test]
        fn anything_parses_or_is_refused_as_invalid(f in "\\PC{0,40}", c in "\\PC{0,5}", v in "\\PC{0,40}") {
            match Filter::parse(&f, &c, &v) {
                Ok(_) => {}
                Err(e) => proptest::prop_assert!(matches!(e, Error::InvalidArgument(_))),
            }
        }

        #[test]
        fn more_than_the_cap_is_refused(n in 0usize..40) {
            let rows = vec![("name", "==", "x"); n];
            let r = parse_filters(rows.iter().copied());
            proptest::prop_assert_eq!(r.is_ok(), n <= MAX_FILTERS);
        }
    }

    #[test]
    fn sql_binds_values() {
        let mut qb = QueryBuilder::<Postgres>::new("SELECT 1 WHERE true");
        Filter::parse("data.x", ">", "5").unwrap().push_sql(&mut qb);
        Filter::parse("name", "==", "'; drop")
            .unwrap()
            .push_sql(&mut qb);
        let sql = qb.sql().as_str().to_owned();
        assert!(!sql.contains("drop"), "{sql}");
        assert!(sql.contains("numeric END) > $3"), "{sql}");
    }
}
