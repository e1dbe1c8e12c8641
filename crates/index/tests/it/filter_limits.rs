//! The filter parser bounds the work one filter can ask for and the length of every error
//! message, and never panics, whatever JSON it is given.

use latentdb_index::{Error, Filter};
use proptest::prelude::*;
use serde_json::{Value, json};

fn invalid(v: &Value) -> (String, String) {
    match Filter::parse(v) {
        Err(e @ Error::InvalidFilter { .. }) => {
            assert!(e.is_caller_fault());
            let Error::InvalidFilter { path, reason } = e else {
                unreachable!()
            };
            (path, reason)
        }
        Err(e) => panic!("expected an invalid filter, got {e}"),
        Ok(_) => panic!("a filter over the limits parsed"),
    }
}

#[test]
fn in_and_nin_lists_are_capped() {
    for op in ["$in", "$nin"] {
        let ok: Vec<Value> = (0..1024).map(|i| json!(i)).collect();
        let f = Filter::parse(&json!({ "x": { op: ok } })).unwrap();
        assert_eq!(f.matches(&json!({ "x": 1023 })), op == "$in");
        assert_eq!(f.matches(&json!({ "x": 1024 })), op == "$nin");
        let big: Vec<Value> = (0..100_000).map(|i| json!(i)).collect();
        let (_, reason) = invalid(&json!({ "x": { op: big } }));
        assert!(reason.contains("1024"), "{reason}");
    }
}

#[test]
fn nesting_and_size_are_bounded() {
    let mut deep = json!({ "a": 1 });
    for _ in 0..100 {
        deep = json!({ "$not": deep });
    }
    let (_, reason) = invalid(&deep);
    assert!(reason.contains("nest"), "{reason}");
    let many: Vec<Value> = (0..5000).map(|i| json!({ "a": i })).collect();
    let (_, reason) = invalid(&json!({ "$or": many }));
    assert!(reason.contains("at most"), "{reason}");
    let mut value = json!(1);
    for _ in 0..200 {
        value = json!([value]);
    }
    let (_, reason) = invalid(&json!({ "a": { "$eq": value } }));
    assert!(reason.contains("deep"), "{reason}");
    // Within the limits, nesting works.
    let mut ok = json!({ "a": 1 });
    for _ in 0..15 {
        ok = json!({ "$not": { "$not": ok } });
    }
    assert!(Filter::parse(&ok).unwrap().matches(&json!({ "a": 1 })));
}

#[test]
fn error_messages_echo_a_bounded_part_of_the_input() {
    let long = "x".repeat(20_000);
    for filter in [
        json!({ long.clone(): { "$gt": "a" } }),
        json!({ "a": { format!("${long}"): 1 } }),
        json!({ format!("${long}"): 1 }),
        json!({ "$and": [{ long.clone(): { "$in": 3 } }] }),
        json!({ format!("{long}..b"): 1 }),
    ] {
        let (path, reason) = invalid(&filter);
        let msg = Filter::parse(&filter).unwrap_err().to_string();
        assert!(
            path.len() + reason.len() < 600 && msg.len() < 700,
            "{} bytes: {}…",
            msg.len(),
            &msg[..100]
        );
    }
}

/// The hash-set match of `$in`/`$nin` agrees with the definition: a field matches when it
/// equals an operand (numbers by value), or is an array with an element equal to a
/// non-array operand.
fn reference_in(operands: &[Value], field: Option<&Value>) -> bool {
    fn eq(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
                (Some(i), Some(j)) => i == j,
                _ => x.as_f64() == y.as_f64(),
            },
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(p, q)| eq(p, q))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| eq(v, w)))
            }
            _ => a == b,
        }
    }
    let Some(f) = field else { return false };
    operands.iter().any(|v| {
        eq(f, v)
            || matches!(f, Value::Array(items) if !v.is_array() && items.iter().any(|i| eq(i, v)))
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..3).prop_map(|i| json!(i)),
        prop_oneof![Just(0.0f64), Just(-0.0), Just(1.0), Just(2.5), Just(1e300)]
            .prop_map(|f| json!(f)),
        "[a-c$.]{0,3}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("a".to_string()),
                    Just("b.c".to_string()),
                    Just("$in".to_string()),
                    Just("$nin".to_string()),
                    Just("$and".to_string()),
                    Just("$or".to_string()),
                    Just("$not".to_string()),
                    Just("$gt".to_string()),
                    Just("$exists".to_string()),
                    Just("$eq".to_string()),
                    "[a-z$.]{0,4}",
                ],
                inner,
                0..4,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(512)))]

    /// Any JSON value: `Ok` or `Err(InvalidFilter)`, never a panic; a parsed filter matches
    /// any document without panicking.
    #[test]
    fn the_parser_never_panics(filter in json_value(), doc in json_value()) {
        match Filter::parse(&filter) {
            Ok(f) => {
                let _ = f.matches(&doc);
                let _ = f.fields();
                let _ = f.is_all();
            }
            Err(e) => {
                let typed = matches!(e, Error::InvalidFilter { .. });
                prop_assert!(typed, "{}", e);
            }
        }
        if let Ok(text) = serde_json::to_string(&filter) {
            let _ = Filter::parse_str(&text);
        }
    }

    /// `$in` and `$nin` through the hash set agree with a linear scan of the operands.
    #[test]
    fn set_membership_matches_a_linear_scan(
        operands in prop::collection::vec(json_value(), 0..8),
        field in prop::option::of(json_value()),
    ) {
        let doc = match &field {
            Some(v) => json!({ "f": v }),
            None => json!({}),
        };
        let want = reference_in(&operands, field.as_ref());
        let f_in = Filter::parse(&json!({ "f": { "$in": operands.clone() } }));
        let f_nin = Filter::parse(&json!({ "f": { "$nin": operands } }));
        // Operands nested too deep are rejected; the generator stays well within the limit.
        prop_assert_eq!(f_in.unwrap().matches(&doc), want);
        prop_assert_eq!(f_nin.unwrap().matches(&doc), !want);
    }
}
