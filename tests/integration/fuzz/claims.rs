//! JWT claims, and the /status document read by `foundry-proxy usage`.

use super::generators::*;
use super::*;

fn claims_object() -> BoxedStrategy<Value> {
    let claim = prop_oneof![
        3 => re("\\PC{0,16}").prop_map(Value::String),
        1 => Just(Value::Null),
        1 => json_value(),
    ];
    let time = prop_oneof![
        3 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => number(),
        1 => json_value(),
    ];
    (
        prop::collection::btree_map(
            prop::sample::select(&["aud", "iss", "tid", "appid", "azp", "oid"][..]),
            claim,
            0..6,
        ),
        prop::collection::btree_map(prop::sample::select(&["exp", "nbf", "iat"][..]), time, 0..3),
        prop::collection::btree_map(key(), json_value(), 0..3),
    )
        .prop_map(|(strings, times, extra)| {
            let mut members: Map<String, Value> = extra.into_iter().collect();
            for (k, v) in strings.into_iter().chain(times) {
                members.insert(k.to_owned(), v);
            }
            Value::Object(members)
        })
        .boxed()
}

proptest! {
    #![proptest_config(config(5))]

    /// `TokenClaims::decode` on any text, and on JWTs whose payload is any claims object in any
    /// base64 padding: never panics; a JWT decodes exactly when its payload deserializes;
    /// `identity()` always works.
    #[test]
    fn claims_decoded(
        payload in hostile(claims_object),
        padding in 0usize..3,
        raw in re("\\PC{0,60}"),
        sections in prop::sample::select(&[1usize, 2, 3, 5][..]),
    ) {
        let _ = TokenClaims::decode(&raw).map(|c| c.identity());
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&payload);
        let mut token = format!("eyJhbGciOiJSUzI1NiJ9.{encoded}{}", "=".repeat(padding));
        for _ in 2..sections {
            token.push_str(".sig");
        }
        if sections == 1 {
            token = encoded.clone();
        }
        let decoded = TokenClaims::decode(&token);
        if sections >= 2 {
            let expected = serde_json::from_slice::<TokenClaims>(&payload).ok();
            prop_assert_eq!(&decoded, &expected);
        }
        if let Some(claims) = decoded {
            let identity = claims.identity();
            prop_assert_eq!(identity.tenant, claims.tid.clone());
        }
    }
}

proptest! {
    #![proptest_config(config(2))]

    /// `usage_rows` and `usage_table` on any `/status` document never panic.
    #[test]
    fn status_documents_read(
        usage in prop_oneof![
            json_value(),
            prop::collection::vec(
                prop::collection::btree_map(
                    prop::sample::select(&["key", "model", "requests", "errors", "prompt_tokens", "completion_tokens"][..]),
                    prop_oneof![number(), re("\\PC{0,8}").prop_map(Value::String), Just(Value::Null)],
                    0..6,
                ),
                0..4,
            ).prop_map(|rows| json!(rows)),
        ],
    ) {
        let document = json!({"usage": usage});
        if let Ok(rows) = foundry_proxy::status::usage_rows(&document) {
            let table = foundry_proxy::status::usage_table(&rows);
            prop_assert!(!table.is_empty());
        }
    }
}
