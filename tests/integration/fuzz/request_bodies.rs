//! Request bodies: json_facts, read_facts (multipart), with_model, the usage request rewrite.

use super::generators::*;
use super::*;

/// A chat-like request object whose `model`, `stream` and `stream_options` take every shape.
fn request_object() -> BoxedStrategy<Value> {
    let model = prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        text().prop_map(|t| Some(Value::String(t))),
        json_value().prop_map(Some),
    ];
    let stream = prop_oneof![
        Just(None),
        Just(Some(Value::Bool(true))),
        Just(Some(Value::Bool(false))),
        json_value().prop_map(Some),
    ];
    let options = prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        (
            prop_oneof![
                Just(None),
                Just(Some(Value::Bool(true))),
                Just(Some(Value::Bool(false))),
                json_value().prop_map(Some),
            ],
            prop::collection::btree_map(key(), json_value(), 0..3),
        )
            .prop_map(|(include, extra)| {
                let mut members: Map<String, Value> = extra.into_iter().collect();
                members.remove("include_usage");
                if let Some(include) = include {
                    members.insert("include_usage".into(), include);
                }
                Some(Value::Object(members))
            }),
        json_value().prop_map(Some),
    ];
    (
        model,
        stream,
        options,
        prop::collection::btree_map(key(), json_value(), 0..4),
    )
        .prop_map(|(model, stream, options, extra)| {
            let mut members: Map<String, Value> = extra.into_iter().collect();
            for (name, value) in [
                ("model", model),
                ("stream", stream),
                ("stream_options", options),
            ] {
                members.remove(name);
                if let Some(value) = value {
                    members.insert(name.into(), value);
                }
            }
            Value::Object(members)
        })
        .boxed()
}

fn request_body() -> BoxedStrategy<Vec<u8>> {
    hostile(|| prop_oneof![3 => request_object(), 1 => json_value()]).boxed()
}

/// Whether `body` is JSON as far as a parser that decodes nothing can tell. serde_json skips the
/// members it does not decode without pairing their `\uD800` surrogates or bounding their numbers,
/// so `json_facts` (which decodes only `model`, `stream` and `stream_options`) accepts a lone
/// surrogate or a `1e999` elsewhere that a full parse refuses: a known, harmless gap (such a
/// body goes upstream as it came, to be refused there).
fn skims_as_json(body: &[u8]) -> bool {
    serde_json::from_slice::<de::IgnoredAny>(body).is_ok()
}

/// What `json_facts` must say of a JSON document without duplicate members.
fn expected_facts(document: &Value) -> Option<BodyFacts> {
    let members = document.as_object()?;
    let model = match members.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return None,
    };
    let (has_stream_options, usage_asked, well_formed) = match members.get("stream_options") {
        None => (false, false, true),
        Some(Value::Null) => (true, false, true),
        Some(Value::Object(options)) => (
            true,
            options.get("include_usage") == Some(&Value::Bool(true)),
            true,
        ),
        Some(_) => (false, false, false),
    };
    Some(if well_formed {
        BodyFacts {
            model,
            stream: members.get("stream") == Some(&Value::Bool(true)),
            has_stream_options,
            usage_asked,
        }
    } else {
        // Malformed options: only the model is read.
        BodyFacts {
            model,
            ..BodyFacts::default()
        }
    })
}

/// Equal JSON values, numbers within a few ulps: rewritten bodies go through `serde_json::Value`,
/// whose default float parser is not correctly rounded, so a number that is not an exact `f64`
/// (an integer past `u64`, a decimal of more than 15 digits) may come back one ulp off (and in
/// exponent form). A known limit of the re-serializing rewrites (see the report), not checked here.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y
                || x.as_f64().zip(y.as_f64()).is_some_and(|(x, y)| {
                    (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
                })
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// The invariant of the usage rewrite: the output is a JSON object asking for usage, with every
/// other member (and every other stream option) as the input had it.
fn check_usage_rewrite(input: &[u8], output: &[u8]) -> Result<(), TestCaseError> {
    let before: Value = serde_json::from_slice(input)
        .map_err(|e| TestCaseError::fail(format!("rewrote a body that is not JSON: {e}")))?;
    let after: Value = serde_json::from_slice(output).map_err(|e| {
        TestCaseError::fail(format!(
            "the rewrite is not JSON ({e}): {}",
            String::from_utf8_lossy(output)
        ))
    })?;
    let (Some(before), Some(after)) = (before.as_object(), after.as_object()) else {
        return Err(TestCaseError::fail("the rewrite is not a JSON object"));
    };
    prop_assert_eq!(&after["stream_options"]["include_usage"], &json!(true));
    let others = |m: &Map<String, Value>| {
        let mut m = m.clone();
        m.remove("stream_options");
        m
    };
    prop_assert!(
        same(
            &Value::Object(others(before)),
            &Value::Object(others(after))
        ),
        "members changed: {:?} -> {:?}",
        before,
        after
    );
    let options = |m: &Map<String, Value>| {
        let mut options = m
            .get("stream_options")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        options.remove("include_usage");
        options
    };
    prop_assert!(
        same(
            &Value::Object(options(before)),
            &Value::Object(options(after))
        ),
        "stream options changed: {:?} -> {:?}",
        before,
        after
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(5))]

    /// `json_facts`: never panics; on JSON without duplicate members it says what a full parse
    /// says (a non-object is refused).
    #[test]
    fn json_facts_agree_with_a_full_parse(body in request_body()) {
        let facts = json_facts(&body);
        if let Some(document) = strict(&body) {
            let expected = expected_facts(&document);
            prop_assert_eq!(facts.as_ref().ok(), expected.as_ref(), "{:?}", document);
        } else if !skims_as_json(&body) {
            prop_assert!(facts.is_err(), "facts of a body that is not JSON: {:?}", facts);
        }
        if let Err(e) = facts {
            prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
            prop_assert!(serde_json::from_slice::<Value>(&e.body()).is_ok());
        }
    }
}

proptest! {
    #![proptest_config(config(6))]

    /// `with_model`: Some exactly for JSON objects; the output is the same object with `model`
    /// replaced.
    #[test]
    fn with_model_replaces_only_the_model(body in request_body(), deployment in re("\\PC{0,12}")) {
        let parsed = serde_json::from_slice::<Value>(&body).ok();
        let rewritten = with_model(&body, &deployment);
        match parsed {
            Some(Value::Object(mut before)) => {
                let out = rewritten.expect("a JSON object is rewritten");
                let after: Value = serde_json::from_slice(&out).expect("the rewrite is JSON");
                let mut after = after.as_object().expect("an object").clone();
                prop_assert_eq!(after.remove("model"), Some(Value::String(deployment)));
                before.remove("model");
                prop_assert!(
                    same(&Value::Object(before.clone()), &Value::Object(after.clone())),
                    "{:?} -> {:?}",
                    before,
                    after
                );
            }
            _ => prop_assert!(rewritten.is_none()),
        }
    }
}

proptest! {
    #![proptest_config(config(5))]

    /// `request_usage_in_stream`: Some exactly when a streaming request does not ask for usage
    /// yet and its options can take it; the output is JSON with `include_usage: true` and
    /// otherwise the same members.
    #[test]
    fn usage_request_keeps_the_request(body in request_body()) {
        let out = usage::request_usage_in_stream(&body);
        let expected = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) if m.get("stream") == Some(&Value::Bool(true)) => {
                match m.get("stream_options") {
                    None | Some(Value::Null) => true,
                    Some(Value::Object(o)) => o.get("include_usage") != Some(&Value::Bool(true)),
                    Some(_) => false,
                }
            }
            _ => false,
        };
        prop_assert_eq!(out.is_some(), expected);
        if let Some(out) = out {
            check_usage_rewrite(&body, &out)?;
        }
    }
}

proptest! {
    #![proptest_config(config(7))]

    /// The request path's pipeline: facts from one pass, the alias rewrite, then
    /// `request_usage_in_known_stream` with those facts: the output, when Some, is JSON asking
    /// for usage with the same members, and agrees with `request_usage_in_stream`.
    #[test]
    fn known_stream_rewrite_is_json(
        body in request_body(),
        alias in proptest::option::of(re("[a-z0-9.-]{1,10}")),
    ) {
        let Ok(facts) = json_facts(&body) else {
            return Ok(());
        };
        let current = alias
            .and_then(|deployment| with_model(&body, &deployment))
            .unwrap_or_else(|| Bytes::copy_from_slice(&body));
        let known = usage::request_usage_in_known_stream(
            &current,
            facts.stream,
            facts.has_stream_options,
            facts.usage_asked,
        );
        if let Some(out) = &known {
            check_usage_rewrite(&current, out)?;
        }
        if strict(&body).is_some() {
            let full = usage::request_usage_in_stream(&current);
            prop_assert_eq!(known.is_some(), full.is_some());
            if let (Some(a), Some(b)) = (known, full) {
                let a: Value = serde_json::from_slice(&a).expect("json");
                let b: Value = serde_json::from_slice(&b).expect("json");
                prop_assert!(same(&a, &b), "{:?} vs {:?}", a, b);
            }
        }
    }
}

/// One part of a generated multipart form.
#[derive(Debug, Clone)]
struct Part {
    name: String,
    filename: Option<String>,
    content: Vec<u8>,
}

fn multipart_form() -> BoxedStrategy<(String, Vec<Part>, Vec<u8>)> {
    // Anything but a CR, so no content can hold the delimiter. The `model` field is text
    // (multer decodes it as the encoding its BOM names, so no BOM).
    let bytes = prop::collection::vec(any::<u8>().prop_filter("no CR", |b| *b != b'\r'), 0..64);
    let text = re("[^\r\u{feff}]{0,30}").prop_map(String::into_bytes);
    let part = prop_oneof![(Just("model".to_owned()), text), (re("[a-z_]{1,8}"), bytes),]
        .prop_flat_map(|(name, content)| {
            (
                Just(name),
                proptest::option::of(re("[a-zA-Z0-9._ ]{1,12}")),
                Just(content),
            )
        })
        .prop_map(|(name, filename, content)| Part {
            name,
            filename,
            content,
        });
    (
        re("[A-Za-z0-9'()+_,./:=?-]{1,40}"),
        prop::collection::vec(part, 0..5),
        prop::collection::vec(any::<u8>(), 0..3),
    )
        .boxed()
}

fn form_bytes(boundary: &str, parts: &[Part]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        out.extend_from_slice(
            format!("Content-Disposition: form-data; name=\"{}\"", part.name).as_bytes(),
        );
        if let Some(filename) = &part.filename {
            out.extend_from_slice(format!("; filename=\"{filename}\"").as_bytes());
        }
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&part.content);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

proptest! {
    #![proptest_config(config(4))]

    /// `read_facts` on multipart forms: a well-formed form yields its first `model` field,
    /// trimmed; hostile forms and content types never panic.
    #[test]
    fn multipart_facts(
        (boundary, parts, _) in multipart_form(),
        mangle in proptest::option::of(edits()),
        content_type in prop_oneof![
            3 => Just(None),
            1 => re("multipart/form-data[;= a-zA-Z\"]{0,30}").prop_map(Some),
        ],
    ) {
        let well_formed = mangle.is_none() && content_type.is_none();
        let mut body = form_bytes(&boundary, &parts);
        if let Some(edits) = &mangle {
            body = apply(body, edits);
        }
        let content_type = content_type
            .unwrap_or_else(|| format!("multipart/form-data; boundary=\"{boundary}\""));
        let mut headers = HeaderMap::new();
        let Ok(value) = HeaderValue::from_str(&content_type) else {
            return Ok(());
        };
        headers.insert(http::header::CONTENT_TYPE, value);
        let facts = block_on(read_facts(&headers, &Bytes::from(body)));
        if well_formed {
            let expected = parts
                .iter()
                .find(|p| p.name == "model")
                .map(|p| String::from_utf8_lossy(&p.content).trim().to_owned());
            let facts = facts.expect("a well-formed form is read");
            prop_assert_eq!(facts.model, expected);
            prop_assert!(!facts.stream);
        } else if let Err(e) = facts {
            prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
    }
}

proptest! {
    #![proptest_config(config(8))]

    /// `read_facts` with any content type and any body never panics.
    #[test]
    fn read_facts_any_body(body in request_body(), content_type in re("\\PC{0,40}")) {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&content_type) {
            headers.insert(http::header::CONTENT_TYPE, value);
        }
        let _ = block_on(read_facts(&headers, &Bytes::from(body)));
    }
}
