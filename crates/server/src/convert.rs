//! Conversions between the protobuf messages and the library's types.

use prost_types::value::Kind;
use serde_json::{Map, Number, Value};

use crate::error::ServiceError;
use crate::pb;

/// A `Struct` as a JSON object. Integral numbers that fit in 64 bits become JSON integers.
pub fn struct_to_json(s: prost_types::Struct) -> Map<String, Value> {
    s.fields
        .into_iter()
        .map(|(k, v)| (k, value_to_json(v)))
        .collect()
}

/// A protobuf `Value` as JSON.
pub fn value_to_json(v: prost_types::Value) -> Value {
    match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::NumberValue(n)) => number_to_json(n),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(value_to_json).collect()),
    }
}

fn number_to_json(n: f64) -> Value {
    // 2^63: the first double that no longer fits in an i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if n.fract() == 0.0 && (-LIMIT..LIMIT).contains(&n) {
        // The guard makes the cast exact.
        #[allow(clippy::cast_possible_truncation)]
        return Value::Number(Number::from(n as i64));
    }
    // NaN and infinities have no JSON form: null.
    Number::from_f64(n).map_or(Value::Null, Value::Number)
}

/// A JSON object as a `Struct`.
pub fn json_to_struct(m: Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: m.into_iter().map(|(k, v)| (k, json_to_value(v))).collect(),
    }
}

/// JSON as a protobuf `Value` (numbers become doubles).
pub fn json_to_value(v: Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(json_to_value).collect(),
        }),
        Value::Object(m) => Kind::StructValue(json_to_struct(m)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// Settings stored as JSON (null or an object) as an optional `Struct`.
fn settings_to_struct(v: Value) -> Option<prost_types::Struct> {
    match v {
        Value::Object(m) => Some(json_to_struct(m)),
        Value::Null => None,
        other => {
            let mut m = Map::new();
            m.insert("value".into(), other);
            Some(json_to_struct(m))
        }
    }
}

/// The library's metric for a protobuf one (unspecified means cosine).
pub fn metric_from_pb(m: i32) -> Result<latentdb::Metric, ServiceError> {
    match pb::Metric::try_from(m) {
        Ok(pb::Metric::Unspecified | pb::Metric::Cosine) => Ok(latentdb::Metric::Cosine),
        Ok(pb::Metric::Dot) => Ok(latentdb::Metric::Dot),
        Ok(pb::Metric::L2) => Ok(latentdb::Metric::L2),
        Err(_) => Err(ServiceError::InvalidArgument(format!("unknown metric {m}"))),
    }
}

/// The protobuf metric for the library's.
pub fn metric_to_pb(m: latentdb::Metric) -> pb::Metric {
    match m {
        latentdb::Metric::Cosine => pb::Metric::Cosine,
        latentdb::Metric::Dot => pb::Metric::Dot,
        latentdb::Metric::L2 => pb::Metric::L2,
    }
}

/// A collection's information as a message.
pub fn collection_info(info: latentdb::CollectionInfo) -> pb::CollectionInfo {
    pb::CollectionInfo {
        name: info.name,
        count: info.count,
        dimension: u32::try_from(info.dimension).unwrap_or(u32::MAX),
        metric: metric_to_pb(info.metric) as i32,
        created_ms: info.created_ms,
        format_version: info.format_version,
        index: settings_to_struct(info.index),
        embedder: settings_to_struct(info.embedder),
        lexical: settings_to_struct(info.lexical),
        shards: 1,
        replicas: 1,
    }
}

/// The collection spec and model (if any) of a create request.
pub fn collection_spec(
    req: pb::CreateCollectionRequest,
) -> Result<(latentdb::CollectionSpec, Option<String>), ServiceError> {
    let mut spec = latentdb::CollectionSpec::new(
        req.name,
        req.dimension as usize,
        metric_from_pb(req.metric)?,
    );
    if let Some(index) = req.index {
        spec.index = Value::Object(struct_to_json(index));
    }
    if let Some(lexical) = req.lexical {
        spec.lexical = Value::Object(struct_to_json(lexical));
    }
    Ok((spec, (!req.model.is_empty()).then_some(req.model)))
}

/// A document to write.
pub fn document(d: pb::Document) -> latentdb::Document {
    latentdb::Document {
        id: (!d.id.is_empty()).then_some(d.id),
        text: d.text,
        metadata: d.metadata.map_or_else(
            || Value::Object(Map::new()),
            |m| Value::Object(struct_to_json(m)),
        ),
        vector: (!d.vector.is_empty()).then_some(d.vector),
    }
}

/// A stored record as a message, with or without its vector.
pub fn record(r: latentdb::Record, with_vector: bool) -> pb::Record {
    pb::Record {
        id: r.id,
        text: r.text,
        metadata: Some(json_to_struct(r.metadata)),
        vector: if with_vector { r.vector } else { Vec::new() },
    }
}

/// A filter message as JSON (`None` when neither form is set).
pub fn filter(f: Option<pb::Filter>) -> Result<Option<Value>, ServiceError> {
    match f.and_then(|f| f.kind) {
        None => Ok(None),
        Some(pb::filter::Kind::Json(text)) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ServiceError::InvalidArgument(format!("filter is not valid JSON: {e}"))),
        Some(pb::filter::Kind::Structured(s)) => Ok(Some(Value::Object(struct_to_json(s)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_through_struct() {
        let v = json!({"year": 2024, "score": 0.5, "tags": ["a", null, true], "n": {"x": -3}});
        let Value::Object(m) = v.clone() else {
            unreachable!()
        };
        assert_eq!(Value::Object(struct_to_json(json_to_struct(m))), v);
    }

    #[test]
    fn odd_numbers_survive() {
        assert_eq!(number_to_json(f64::NAN), Value::Null);
        assert_eq!(number_to_json(1e300), json!(1e300));
        assert_eq!(number_to_json(-0.0), json!(0));
    }
}
