//! Algorithm parameters from the command line: `--params '{...}'` and `--param key=value`.

use serde_json::{Map, Value};

/// Parses `--params`: a JSON object.
pub fn parse_params_object(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!("expected a JSON object, got {other}")),
        Err(e) => Err(format!(
            "not valid JSON at line {}, column {}: {}",
            e.line(),
            e.column(),
            strip_position(&e)
        )),
    }
}

/// Parses one `--param key=value`. The value is read as JSON when it is JSON (`0.75`, `true`,
/// `null`, `["a","b"]`, `"quoted"`), and as a plain string otherwise (`second_price`).
pub fn parse_key_value(text: &str) -> Result<(String, Value), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("expected key=value, got {text:?}"));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("the key of {text:?} is empty"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((key.to_owned(), value))
}

/// The parameters a tally runs with: the file's, then `--params` over them, then each
/// `--param` over those, key by key (no deep merge).
pub fn merge(
    file: &Map<String, Value>,
    params: Option<&Map<String, Value>>,
    pairs: &[(String, Value)],
) -> Value {
    let mut merged = file.clone();
    if let Some(params) = params {
        merged.extend(params.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    merged.extend(pairs.iter().cloned());
    Value::Object(merged)
}

/// A serde_json error message without its trailing "at line L column C".
pub(crate) fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_are_json_when_they_can_be() {
        let cases = [
            ("threshold=0.75", json!(0.75)),
            ("inclusive=true", json!(true)),
            ("f=1", json!(1)),
            ("pricing=second_price", json!("second_price")),
            ("items=[\"a\",\"b\"]", json!(["a", "b"])),
            ("name=\"7\"", json!("7")),
            ("reserve=", json!("")),
            ("note=a=b", json!("a=b")),
        ];
        for (text, expected) in cases {
            let (_, value) = parse_key_value(text).unwrap();
            assert_eq!(value, expected, "{text}");
        }
        assert!(parse_key_value("threshold").is_err());
        assert!(parse_key_value("=1").is_err());
    }

    #[test]
    fn later_sources_win_key_by_key() {
        let file = json!({"threshold": 0.6, "basis": "cast"});
        let file = file.as_object().unwrap();
        let params = parse_params_object(r#"{"threshold": 0.7, "inclusive": true}"#).unwrap();
        let pairs = [parse_key_value("threshold=0.75").unwrap()];
        assert_eq!(
            merge(file, Some(&params), &pairs),
            json!({"threshold": 0.75, "basis": "cast", "inclusive": true})
        );
        let err = parse_params_object("{\"a\": }").unwrap_err();
        assert!(err.contains("line 1, column 7"), "{err}");
        assert!(parse_params_object("[1]").is_err());
    }
}
