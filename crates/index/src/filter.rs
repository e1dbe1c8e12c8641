//! A metadata filter language over JSON objects, in the style of MongoDB / Chroma `where`.
//!
//! ```text
//! {"genre": "jazz"}                                   equality (also: array field contains it)
//! {"year": {"$gte": 1990, "$lt": 2000}}               several operators on a field: all hold
//! {"a": 1, "b": 2}                                    several fields: all hold
//! {"$and": [{...}, {...}]}   {"$or": [{...}, ...]}    non-empty arrays of filters
//! {"$not": {...}}                                     negation
//! {"author.name": {"$in": ["ann", "bob"]}}            dotted paths reach into nested objects
//! {}                                                  matches everything
//! ```
//!
//! Operators: `$eq`, `$ne` (any JSON value), `$gt`, `$gte`, `$lt`, `$lte` (numbers only),
//! `$in`, `$nin` (arrays), `$exists` (boolean). Numbers compare by value (`1 == 1.0`).
//! A missing field fails `$eq`, `$in` and every comparison, and passes `$ne` and `$nin`
//! (as in MongoDB). Equality against a field that holds an array also matches when any
//! element is equal. Unknown operators, wrong operand types and malformed shapes are
//! [`Error::InvalidFilter`] errors naming the place in the filter (with caller input in the
//! message cut to a bounded length).
//!
//! Limits keep one filter's work bounded: at most [`MAX_SET_OPERANDS`] operands per
//! `$in`/`$nin` (matched through a hash set, see [`ValueSet`]), at most [`MAX_FILTER_DEPTH`]
//! nested `$and`/`$or`/`$not` levels, at most [`MAX_FILTER_CLAUSES`] filters and conditions
//! in all, and operand values nested at most [`MAX_VALUE_DEPTH`] arrays or objects deep.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::echo::bounded;
use crate::error::{Error, Result};
pub use crate::value_set::ValueSet;
use crate::value_set::value_eq;

/// Most operands of one `$in` or `$nin`.
pub const MAX_SET_OPERANDS: usize = 1024;
/// Most nested levels of filter objects (`$and`/`$or` items and `$not` operands).
pub const MAX_FILTER_DEPTH: usize = 32;
/// Most filters and field conditions in one filter document.
pub const MAX_FILTER_CLAUSES: usize = 1024;
/// Most arrays or objects nested inside one operand value.
pub const MAX_VALUE_DEPTH: usize = 32;
/// Most characters of a path an error message shows.
const MAX_PATH_ECHO: usize = 128;

/// A parsed metadata filter. Build with [`Filter::parse`], test with [`Filter::matches`].
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every sub-filter holds (an empty list matches everything).
    And(Vec<Filter>),
    /// At least one sub-filter holds.
    Or(Vec<Filter>),
    /// The sub-filter does not hold.
    Not(Box<Filter>),
    /// A condition on one field.
    Field {
        /// The dotted path as written.
        path: String,
        /// The condition.
        cond: Condition,
    },
}

/// A condition on one field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Equal (or, for an array field, containing an equal element).
    Eq(Value),
    /// Not [`Condition::Eq`].
    Ne(Value),
    /// A number greater than.
    Gt(f64),
    /// A number greater than or equal to.
    Gte(f64),
    /// A number less than.
    Lt(f64),
    /// A number less than or equal to.
    Lte(f64),
    /// [`Condition::Eq`] to one of the values.
    In(ValueSet),
    /// Not [`Condition::In`].
    Nin(ValueSet),
    /// The field is present (`true`) or absent (`false`).
    Exists(bool),
}

fn invalid(path: &str, reason: impl Into<String>) -> Error {
    let path = if path.is_empty() {
        "<root>".to_string()
    } else if path.chars().nth(MAX_PATH_ECHO).is_some() {
        let mut cut: String = path.chars().take(MAX_PATH_ECHO).collect();
        cut.push('…');
        cut
    } else {
        path.to_string()
    };
    Error::InvalidFilter {
        path,
        reason: reason.into(),
    }
}

/// How deeply arrays and objects nest in `v`, counting `v` itself; stops counting past
/// `limit` (so that the walk is bounded too).
fn value_depth(v: &Value, limit: usize) -> usize {
    if limit == 0 {
        return 1;
    }
    match v {
        Value::Array(items) => {
            1 + items
                .iter()
                .map(|i| value_depth(i, limit - 1))
                .max()
                .unwrap_or(0)
        }
        Value::Object(map) => {
            1 + map
                .values()
                .map(|i| value_depth(i, limit - 1))
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    }
}

/// An operand value, checked for nesting depth.
fn operand(v: &Value, here: &str) -> Result<Value> {
    if value_depth(v, MAX_VALUE_DEPTH + 1) > MAX_VALUE_DEPTH {
        return Err(invalid(
            here,
            format!("a value nests arrays or objects more than {MAX_VALUE_DEPTH} deep"),
        ));
    }
    Ok(v.clone())
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Filter {
    /// A filter that matches everything.
    pub fn all() -> Self {
        Filter::And(Vec::new())
    }

    /// Parses a filter document (see the module docs for the syntax and limits).
    pub fn parse(doc: &Value) -> Result<Self> {
        Parser { clauses: 0 }.doc(doc, "", 0)
    }

    /// Parses a filter from JSON text.
    pub fn parse_str(text: &str) -> Result<Self> {
        let doc: Value =
            serde_json::from_str(text).map_err(|e| invalid("", format!("not valid JSON: {e}")))?;
        Self::parse(&doc)
    }

    /// True when `metadata` (normally a JSON object) satisfies the filter.
    pub fn matches(&self, metadata: &Value) -> bool {
        let object = metadata.as_object();
        self.matches_fields(&|name: &str| object.and_then(|o| o.get(name)))
    }

    /// [`Filter::matches`] on a metadata object held in another form: `field` gives the
    /// value of a top-level member by name (`None`: absent). Paths are followed exactly as
    /// [`Filter::matches`] follows them: a member named by the whole path first, then the
    /// part before the first dot and the rest inside its object value.
    pub fn matches_fields<'a, F>(&self, field: &F) -> bool
    where
        F: Fn(&str) -> Option<&'a Value>,
    {
        match self {
            Filter::And(fs) => fs.iter().all(|f| f.matches_fields(field)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches_fields(field)),
            Filter::Not(f) => !f.matches_fields(field),
            Filter::Field { path, cond } => cond.holds(lookup_fields(field, path)),
        }
    }

    /// True when the filter matches every document (the empty filter `{}`).
    pub fn is_all(&self) -> bool {
        matches!(self, Filter::And(fs) if fs.iter().all(Filter::is_all))
    }

    /// The distinct field paths the filter reads, sorted (for a payload index).
    pub fn fields(&self) -> Vec<String> {
        let mut out = BTreeSet::new();
        self.collect_fields(&mut out);
        out.into_iter().collect()
    }

    fn collect_fields(&self, out: &mut BTreeSet<String>) {
        match self {
            Filter::And(fs) | Filter::Or(fs) => fs.iter().for_each(|f| f.collect_fields(out)),
            Filter::Not(f) => f.collect_fields(out),
            Filter::Field { path, .. } => {
                out.insert(path.clone());
            }
        }
    }
}

/// The parser's state: how many filters and conditions it has made so far.
struct Parser {
    clauses: usize,
}

impl Parser {
    /// Counts one more filter or condition.
    fn count(&mut self, here: &str) -> Result<()> {
        self.clauses += 1;
        if self.clauses > MAX_FILTER_CLAUSES {
            return Err(invalid(
                here,
                format!("a filter may hold at most {MAX_FILTER_CLAUSES} filters and conditions"),
            ));
        }
        Ok(())
    }

    fn doc(&mut self, doc: &Value, at: &str, depth: usize) -> Result<Filter> {
        if depth > MAX_FILTER_DEPTH {
            return Err(invalid(
                at,
                format!("filters nest at most {MAX_FILTER_DEPTH} levels deep"),
            ));
        }
        let Value::Object(map) = doc else {
            return Err(invalid(
                at,
                format!("a filter must be an object, found {}", type_name(doc)),
            ));
        };
        self.count(at)?;
        let mut parts = Vec::with_capacity(map.len().min(MAX_FILTER_CLAUSES));
        for (key, value) in map {
            parts.push(self.entry(key, value, at, depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.swap_remove(0)
        } else {
            Filter::And(parts)
        })
    }

    fn entry(&mut self, key: &str, value: &Value, at: &str, depth: usize) -> Result<Filter> {
        let here = join(at, key);
        match key {
            "$and" | "$or" => {
                let Value::Array(items) = value else {
                    return Err(invalid(
                        &here,
                        format!(
                            "{key} takes an array of filters, found {}",
                            type_name(value)
                        ),
                    ));
                };
                if items.is_empty() {
                    return Err(invalid(&here, format!("{key} needs at least one filter")));
                }
                let mut fs = Vec::with_capacity(items.len().min(MAX_FILTER_CLAUSES));
                for (i, f) in items.iter().enumerate() {
                    fs.push(self.doc(f, &format!("{here}[{i}]"), depth + 1)?);
                }
                Ok(if key == "$and" {
                    Filter::And(fs)
                } else {
                    Filter::Or(fs)
                })
            }
            "$not" => Ok(Filter::Not(Box::new(self.doc(value, &here, depth + 1)?))),
            k if k.starts_with('$') => Err(invalid(
                &here,
                format!("unknown logical operator {}", bounded(k)),
            )),
            _ => {
                if key.split('.').any(str::is_empty) {
                    return Err(invalid(
                        &here,
                        "field names and path segments must not be empty",
                    ));
                }
                self.field(key, value, &here)
            }
        }
    }

    fn field(&mut self, path: &str, value: &Value, here: &str) -> Result<Filter> {
        let field = |cond| Filter::Field {
            path: path.to_string(),
            cond,
        };
        let Value::Object(ops) = value else {
            self.count(here)?;
            return Ok(field(Condition::Eq(operand(value, here)?)));
        };
        let dollar = ops.keys().filter(|k| k.starts_with('$')).count();
        if ops.is_empty() {
            return Err(invalid(here, "empty operator object"));
        }
        if dollar == 0 {
            self.count(here)?;
            return Ok(field(Condition::Eq(operand(value, here)?)));
        }
        if dollar != ops.len() {
            return Err(invalid(
                here,
                "an operator object cannot mix $operators and field names",
            ));
        }
        let mut conds = Vec::with_capacity(ops.len().min(MAX_FILTER_CLAUSES));
        for (op, arg) in ops {
            self.count(here)?;
            conds.push(field(parse_op(op, arg, &join(here, op))?));
        }
        Ok(if conds.len() == 1 {
            conds.swap_remove(0)
        } else {
            Filter::And(conds)
        })
    }
}

fn parse_op(op: &str, arg: &Value, here: &str) -> Result<Condition> {
    let number = || -> Result<f64> {
        arg.as_f64().ok_or_else(|| {
            invalid(
                here,
                format!("{op} compares numbers, found {}", type_name(arg)),
            )
        })
    };
    let array = || -> Result<ValueSet> {
        match arg {
            Value::Array(a) if a.len() > MAX_SET_OPERANDS => Err(invalid(
                here,
                format!(
                    "{op} takes at most {MAX_SET_OPERANDS} values, found {}",
                    a.len()
                ),
            )),
            Value::Array(a) => Ok(ValueSet::new(
                a.iter().map(|v| operand(v, here)).collect::<Result<_>>()?,
            )),
            _ => Err(invalid(
                here,
                format!("{op} takes an array, found {}", type_name(arg)),
            )),
        }
    };
    Ok(match op {
        "$eq" => Condition::Eq(operand(arg, here)?),
        "$ne" => Condition::Ne(operand(arg, here)?),
        "$gt" => Condition::Gt(number()?),
        "$gte" => Condition::Gte(number()?),
        "$lt" => Condition::Lt(number()?),
        "$lte" => Condition::Lte(number()?),
        "$in" => Condition::In(array()?),
        "$nin" => Condition::Nin(array()?),
        "$exists" => match arg {
            Value::Bool(b) => Condition::Exists(*b),
            _ => {
                return Err(invalid(
                    here,
                    format!("$exists takes true or false, found {}", type_name(arg)),
                ));
            }
        },
        "$and" | "$or" | "$not" => {
            return Err(invalid(
                here,
                format!("{op} belongs at the top of a filter, not on a field"),
            ));
        }
        _ => return Err(invalid(here, format!("unknown operator {}", bounded(op)))),
    })
}

/// Follows a dotted path into nested objects, starting from top-level members given by
/// `field`. A key that itself contains dots is found too when it exists literally.
fn lookup_fields<'a>(field: &impl Fn(&str) -> Option<&'a Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = field(path) {
        return Some(v);
    }
    let (head, rest) = path.split_once('.')?;
    let mut obj: &Map<String, Value> = field(head)?.as_object()?;
    let mut path = rest;
    loop {
        if let Some(v) = obj.get(path) {
            return Some(v);
        }
        let (head, rest) = path.split_once('.')?;
        obj = obj.get(head)?.as_object()?;
        path = rest;
    }
}

/// Equality, or containment when the field is an array and the operand is not.
fn field_eq(field: &Value, want: &Value) -> bool {
    value_eq(field, want)
        || matches!((field, want), (Value::Array(items), w) if !w.is_array() && items.iter().any(|i| value_eq(i, w)))
}

/// [`field_eq`] against any operand of `set`, through its hash index: the field itself is
/// an operand, or it is an array with a non-array element that is one (an array element
/// equals only an array operand, which containment excludes).
fn set_has(set: &ValueSet, field: &Value) -> bool {
    set.contains(field)
        || matches!(field, Value::Array(items) if items.iter().any(|i| !i.is_array() && set.contains(i)))
}

impl Condition {
    fn holds(&self, field: Option<&Value>) -> bool {
        let num = || field.and_then(Value::as_f64);
        match self {
            Condition::Eq(v) => field.is_some_and(|f| field_eq(f, v)),
            Condition::Ne(v) => !field.is_some_and(|f| field_eq(f, v)),
            Condition::Gt(x) => num().is_some_and(|f| f > *x),
            Condition::Gte(x) => num().is_some_and(|f| f >= *x),
            Condition::Lt(x) => num().is_some_and(|f| f < *x),
            Condition::Lte(x) => num().is_some_and(|f| f <= *x),
            Condition::In(vs) => field.is_some_and(|f| set_has(vs, f)),
            Condition::Nin(vs) => !field.is_some_and(|f| set_has(vs, f)),
            Condition::Exists(want) => field.is_some() == *want,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn doc() -> Value {
        json!({
            "genre": "jazz", "year": 1995, "price": 9.5, "tags": ["live", "remastered"],
            "author": {"name": "ann", "age": 40}, "flag": true, "none": null, "weird.key": 1
        })
    }

    /// Whether `doc()` matches, checked to be the same through `matches_fields`.
    fn m(filter: Value) -> bool {
        let f = Filter::parse(&filter).unwrap();
        let d = doc();
        let whole = f.matches(&d);
        let members = d.as_object().unwrap();
        assert_eq!(
            whole,
            f.matches_fields(&|k: &str| members.get(k)),
            "{filter}"
        );
        whole
    }

    fn err(filter: Value) -> String {
        match Filter::parse(&filter) {
            Err(Error::InvalidFilter { path, reason }) => format!("{path}: {reason}"),
            other => panic!("expected an invalid filter, got {other:?}"),
        }
    }

    #[test]
    fn equality() {
        assert!(m(json!({"genre": "jazz"})));
        assert!(!m(json!({"genre": "rock"})));
        assert!(m(json!({"year": 1995.0})), "numbers compare by value");
        assert!(m(json!({"flag": true})));
        assert!(m(json!({"none": null})));
        assert!(!m(json!({"missing": null})));
        assert!(m(json!({"tags": "live"})), "array field contains");
        assert!(
            m(json!({"tags": ["live", "remastered"]})),
            "whole array equal"
        );
        assert!(!m(json!({"tags": ["live"]})));
        assert!(
            m(json!({"author": {"name": "ann", "age": 40}})),
            "object value equality"
        );
        assert!(m(json!({"genre": {"$eq": "jazz"}})));
        assert!(m(json!({})), "empty filter matches all");
        assert!(Filter::parse(&json!({})).unwrap().is_all());
    }

    #[test]
    fn comparisons() {
        assert!(m(json!({"year": {"$gt": 1990}})));
        assert!(!m(json!({"year": {"$gt": 1995}})));
        assert!(m(json!({"year": {"$gte": 1995}})));
        assert!(m(json!({"price": {"$lt": 10}})));
        assert!(m(json!({"price": {"$lte": 9.5}})));
        assert!(m(json!({"year": {"$gte": 1990, "$lt": 2000}})));
        assert!(!m(json!({"year": {"$gte": 1990, "$lt": 1995}})));
        assert!(
            !m(json!({"genre": {"$gt": 1}})),
            "comparison on a string field is false"
        );
        assert!(!m(json!({"missing": {"$lt": 1}})));
    }

    #[test]
    fn ne_in_nin_exists() {
        assert!(m(json!({"genre": {"$ne": "rock"}})));
        assert!(!m(json!({"genre": {"$ne": "jazz"}})));
        assert!(m(json!({"missing": {"$ne": 1}})), "missing passes $ne");
        assert!(m(json!({"genre": {"$in": ["rock", "jazz"]}})));
        assert!(!m(json!({"genre": {"$in": []}})));
        assert!(m(json!({"tags": {"$in": ["studio", "live"]}})));
        assert!(m(json!({"genre": {"$nin": ["rock", "pop"]}})));
        assert!(!m(json!({"year": {"$nin": [1995]}})));
        assert!(m(json!({"missing": {"$nin": [1]}})));
        assert!(
            m(json!({"none": {"$exists": true}})),
            "null counts as present"
        );
        assert!(m(json!({"missing": {"$exists": false}})));
        assert!(!m(json!({"genre": {"$exists": false}})));
    }

    #[test]
    fn logic_and_paths() {
        assert!(m(json!({"$and": [{"genre": "jazz"}, {"year": 1995}]})));
        assert!(!m(json!({"$and": [{"genre": "jazz"}, {"year": 1996}]})));
        assert!(m(json!({"$or": [{"genre": "rock"}, {"year": 1995}]})));
        assert!(!m(json!({"$or": [{"genre": "rock"}, {"year": 1996}]})));
        assert!(m(json!({"$not": {"genre": "rock"}})));
        assert!(!m(json!({"$not": {"genre": "jazz"}})));
        assert!(m(json!({"genre": "jazz", "year": {"$lt": 2000}})));
        assert!(m(json!({"author.name": "ann"})));
        assert!(m(json!({"author.age": {"$gte": 40}})));
        assert!(!m(json!({"author.name.first": "ann"})));
        assert!(m(json!({"weird.key": 1})), "literal dotted key");
        assert!(m(
            json!({"$or": [{"$and": [{"genre": "jazz"}, {"$not": {"flag": false}}]}]})
        ));
        assert!(
            !Filter::parse(&json!({"a": 1}))
                .unwrap()
                .matches(&json!("not an object"))
        );
    }

    #[test]
    fn fields_lists_paths() {
        let f = Filter::parse(&json!({
            "$or": [{"b": 1}, {"a.x": {"$gt": 2}}], "$not": {"c": {"$exists": true}}, "b": {"$ne": 3}
        }))
        .unwrap();
        assert_eq!(f.fields(), vec!["a.x", "b", "c"]);
        assert!(Filter::all().fields().is_empty());
    }

    #[test]
    fn errors_are_typed_and_located() {
        assert!(err(json!({"year": {"$gt": "1990"}})).contains("compares numbers"));
        assert!(err(json!({"year": {"$foo": 1}})).contains("unknown operator \"$foo\""));
        assert!(err(json!({"$xor": []})).contains("unknown logical operator"));
        assert!(err(json!({"genre": {"$in": "jazz"}})).contains("takes an array"));
        assert!(err(json!({"genre": {"$nin": 3}})).contains("takes an array"));
        assert!(err(json!({"genre": {"$exists": 1}})).contains("true or false"));
        assert!(err(json!({"$and": {}})).contains("array of filters"));
        assert!(err(json!({"$or": []})).contains("at least one"));
        assert!(err(json!({"$not": [1]})).contains("must be an object"));
        assert!(err(json!([1, 2])).contains("must be an object"));
        assert!(err(json!({"a": {}})).contains("empty operator"));
        assert!(err(json!({"a": {"$gt": 1, "b": 2}})).contains("cannot mix"));
        assert!(err(json!({"a..b": 1})).contains("must not be empty"));
        assert!(err(json!({"a": {"$and": []}})).contains("belongs at the top"));
        let located = err(json!({"$and": [{"a": 1}, {"price": {"$gt": "x"}}]}));
        assert!(located.starts_with("$and[1].price.$gt:"), "{located}");
        assert!(matches!(
            Filter::parse_str("{nope"),
            Err(Error::InvalidFilter { .. })
        ));
        assert!(Filter::parse_str(r#"{"a": {"$lte": 3}}"#).is_ok());
    }
}
