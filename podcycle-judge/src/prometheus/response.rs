//! Parsing the answers of Prometheus' instant-query API (`/api/v1/query`).

use std::collections::BTreeMap;

use serde_json::Value;

use super::PrometheusError;

/// One series of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' labels (with `__name__` when Prometheus keeps it).
    pub labels: BTreeMap<String, String>,
    /// The value; may be NaN or infinite. For a native histogram sample, its
    /// count.
    pub value: f64,
    /// For a native histogram sample (`"histogram"` rather than `"value"`):
    /// each bucket's upper bound and count (not cumulative), the zero bucket
    /// included.
    pub native: Option<Vec<(f64, f64)>>,
}

/// The result of an instant query.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryResult {
    /// `resultType: vector`; empty when nothing matched.
    Vector(Vec<Sample>),
    /// `resultType: scalar`.
    Scalar(f64),
}

/// Parses the response of `/api/v1/query` with HTTP status `status`.
///
/// Non-200 statuses and `"status": "error"` bodies become errors carrying
/// Prometheus' own message. Sample values are strings in the API (`"1"`,
/// `"NaN"`, `"+Inf"`); they are parsed to `f64`, non-finite values kept.
/// A native histogram sample (`"histogram"`, no `"value"`) has its count as
/// its value and its buckets in [`Sample::native`].
pub fn parse_query_response(status: u16, body: &[u8]) -> Result<QueryResult, PrometheusError> {
    let json: Result<Value, _> = serde_json::from_slice(body);
    let api_error = |v: &Value| -> Option<(String, String)> {
        (v.get("status")?.as_str()? == "error").then(|| {
            let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            (text("errorType"), text("error"))
        })
    };
    if status != 200 {
        let message = match &json {
            Ok(v) => api_error(v).map(|(t, m)| format!("{t}: {m}")),
            Err(_) => None,
        }
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            text.chars().take(200).collect()
        });
        return Err(PrometheusError::Status { status, message });
    }
    let json = json.map_err(|e| PrometheusError::Decode(format!("invalid JSON: {e}")))?;
    if let Some((error_type, message)) = api_error(&json) {
        return Err(PrometheusError::Api {
            error_type,
            message,
        });
    }
    if json.get("status").and_then(Value::as_str) != Some("success") {
        return Err(PrometheusError::Decode(
            "no \"status\": \"success\"".to_owned(),
        ));
    }
    let data = json
        .get("data")
        .ok_or_else(|| PrometheusError::Decode("no \"data\"".to_owned()))?;
    let kind = data
        .get("resultType")
        .and_then(Value::as_str)
        .ok_or_else(|| PrometheusError::Decode("no \"data.resultType\"".to_owned()))?;
    let result = data
        .get("result")
        .ok_or_else(|| PrometheusError::Decode("no \"data.result\"".to_owned()))?;
    match kind {
        "vector" => {
            let items = result
                .as_array()
                .ok_or_else(|| PrometheusError::Decode("\"result\" is not an array".to_owned()))?;
            let mut samples = Vec::with_capacity(items.len());
            for item in items {
                let (value, native) = match (item.get("value"), item.get("histogram")) {
                    (Some(value), _) => (parse_point(value)?, None),
                    (None, Some(h)) => {
                        let (count, buckets) = parse_native(h)?;
                        (count, Some(buckets))
                    }
                    (None, None) => continue,
                };
                let labels = match item.get("metric") {
                    None | Some(Value::Null) => BTreeMap::new(),
                    Some(Value::Object(map)) => map
                        .iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect(),
                    Some(_) => {
                        return Err(PrometheusError::Decode(
                            "\"metric\" is not an object".to_owned(),
                        ))
                    }
                };
                samples.push(Sample {
                    labels,
                    value,
                    native,
                });
            }
            Ok(QueryResult::Vector(samples))
        }
        "scalar" => Ok(QueryResult::Scalar(parse_point(result)?)),
        other => Err(PrometheusError::UnexpectedResultType(other.to_owned())),
    }
}

/// `[<unix time>, {"count": "..", "sum": "..", "buckets": [[rule, "lower",
/// "upper", "count"], ..]}]` to the count and `(upper, count)` per bucket.
fn parse_native(point: &Value) -> Result<(f64, Vec<(f64, f64)>), PrometheusError> {
    let bad = || PrometheusError::Decode(format!("bad native histogram sample {point}"));
    let h = point
        .as_array()
        .filter(|a| a.len() == 2)
        .map(|a| &a[1])
        .ok_or_else(bad)?;
    let number = |v: Option<&Value>| v.and_then(Value::as_str).and_then(parse_value);
    let count = number(h.get("count")).ok_or_else(bad)?;
    let mut buckets = Vec::new();
    for b in h
        .get("buckets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let b = b.as_array().filter(|b| b.len() == 4).ok_or_else(bad)?;
        let upper = number(b.get(2)).ok_or_else(bad)?;
        let n = number(b.get(3)).ok_or_else(bad)?;
        buckets.push((upper, n));
    }
    Ok((count, buckets))
}

/// `[<unix time>, "<value>"]` to the value.
fn parse_point(point: &Value) -> Result<f64, PrometheusError> {
    let text = point
        .as_array()
        .filter(|a| a.len() == 2)
        .and_then(|a| a[1].as_str())
        .ok_or_else(|| PrometheusError::Decode(format!("bad sample {point}")))?;
    parse_value(text).ok_or_else(|| PrometheusError::Decode(format!("bad sample value {text:?}")))
}
pub(super) fn parse_value(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        t => t.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_vector() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"x_count","version":"v1","error_type":"500"},"value":[1700000000.5,"12"]},
            {"metric":{"version":"v1"},"value":[1700000000.5,"1e3"]}]}}"#;
        let QueryResult::Vector(samples) = parse_query_response(200, body).unwrap() else {
            panic!("not a vector");
        };
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].value, 12.0);
        assert_eq!(samples[0].labels["error_type"], "500");
        assert_eq!(samples[1].value, 1000.0);
    }

    #[test]
    fn parses_native_histogram_samples() {
        // As Prometheus 2.42 answers for a native histogram series.
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"x","version":"v1"},"histogram":[1700000000.5,{"count":"21","sum":"3.5",
             "buckets":[[3,"-9.5367431640625e-07","9.5367431640625e-07","1"],[0,"0.25","0.2726269331663144","20"]]}]}]}}"#;
        let QueryResult::Vector(samples) = parse_query_response(200, body).unwrap() else {
            panic!("not a vector");
        };
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].value, 21.0);
        assert_eq!(
            samples[0].native.as_deref(),
            Some(&[(9.5367431640625e-07, 1.0), (0.2726269331663144, 20.0)][..])
        );
    }

    #[test]
    fn parses_an_empty_vector_and_a_scalar() {
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(
            parse_query_response(200, empty).unwrap(),
            QueryResult::Vector(vec![])
        );
        let scalar =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"0.25"]}}"#;
        assert_eq!(
            parse_query_response(200, scalar).unwrap(),
            QueryResult::Scalar(0.25)
        );
    }

    #[test]
    fn parses_nan_and_infinities() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{},"value":[1,"NaN"]},{"metric":{},"value":[1,"+Inf"]},{"metric":{},"value":[1,"-Inf"]}]}}"#;
        let QueryResult::Vector(s) = parse_query_response(200, body).unwrap() else {
            panic!("not a vector");
        };
        assert!(s[0].value.is_nan());
        assert_eq!(s[1].value, f64::INFINITY);
        assert_eq!(s[2].value, f64::NEG_INFINITY);
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#;
        assert!(
            matches!(parse_query_response(200, scalar), Ok(QueryResult::Scalar(v)) if v.is_nan())
        );
    }

    #[test]
    fn reports_api_errors_and_bad_statuses() {
        let body = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#;
        assert_eq!(
            parse_query_response(400, body).unwrap_err(),
            PrometheusError::Status {
                status: 400,
                message: "bad_data: parse error at char 5".to_owned()
            }
        );
        assert_eq!(
            parse_query_response(200, body).unwrap_err(),
            PrometheusError::Api {
                error_type: "bad_data".to_owned(),
                message: "parse error at char 5".to_owned()
            }
        );
        let err = parse_query_response(502, b"<html>Bad Gateway</html>").unwrap_err();
        assert_eq!(
            err,
            PrometheusError::Status {
                status: 502,
                message: "<html>Bad Gateway</html>".to_owned()
            }
        );
        assert!(err.to_string().contains("HTTP 502"));
    }

    #[test]
    fn refuses_malformed_bodies() {
        for body in [
            &b"not json"[..],
            br#"{"status":"success"}"#,
            br#"{"status":"success","data":{"resultType":"vector","result":{}}}"#,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"abc"]}]}}"#,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1]}]}}"#,
        ] {
            assert!(
                matches!(parse_query_response(200, body), Err(PrometheusError::Decode(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert_eq!(
            parse_query_response(200, matrix).unwrap_err(),
            PrometheusError::UnexpectedResultType("matrix".to_owned())
        );
    }
}
