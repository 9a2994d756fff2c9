//! Refusals: diagnose::upstream_refusal on Azure's 4xx bodies.

use super::generators::*;
use super::*;

pub(super) fn context() -> BoxedStrategy<DiagnosisContext> {
    (
        prop_oneof![
            Just("11111111-1111-1111-1111-111111111111".to_owned()),
            re("\\PC{0,40}"),
        ],
        prop_oneof![
            prop::sample::select(
                &[
                    "contoso.openai.azure.com",
                    "r.services.ai.azure.com",
                    "x.azure.us",
                    "127.0.0.1",
                    "[::1]",
                    "",
                    ".",
                    "a..b",
                ][..]
            )
            .prop_map(str::to_owned),
            re("\\PC{0,20}"),
        ],
        proptest::option::of(re("\\PC{0,12}")),
        any::<bool>(),
    )
        .prop_map(|(tenant, host, version, started)| DiagnosisContext {
            tenant_id: tenant,
            client_id: "22222222-2222-2222-2222-222222222222".into(),
            scope: "https://cognitiveservices.azure.com/.default".into(),
            endpoint_host: host,
            authority: "https://login.microsoftonline.com".into(),
            api: "openai-v1",
            api_version: version,
            started: started.then(tokio::time::Instant::now),
        })
        .boxed()
}

fn claims() -> BoxedStrategy<Option<TokenClaims>> {
    let text = || {
        proptest::option::of(prop_oneof![
            re("\\PC{0,20}"),
            prop::sample::select(
                &[
                    "https://cognitiveservices.azure.com",
                    "https://cognitiveservices.azure.com/",
                    "https://ai.azure.com",
                    "/",
                    "",
                    "11111111-1111-1111-1111-111111111111",
                    "99999999-1111-1111-1111-111111111111",
                ][..]
            )
            .prop_map(str::to_owned),
        ])
    };
    let time = || {
        proptest::option::of(prop_oneof![
            any::<i64>(),
            Just(i64::MIN),
            Just(i64::MAX),
            1_500_000_000i64..2_500_000_000,
        ])
    };
    proptest::option::of(
        (
            text(),
            text(),
            text(),
            text(),
            text(),
            text(),
            time(),
            time(),
            time(),
        )
            .prop_map(
                |(aud, iss, tid, appid, azp, oid, exp, nbf, iat)| TokenClaims {
                    aud,
                    iss,
                    tid,
                    appid,
                    azp,
                    oid,
                    exp,
                    nbf,
                    iat,
                },
            ),
    )
    .boxed()
}

/// Azure-shaped error bodies: the codes and message fragments the catalog matches on.
fn azure_error() -> BoxedStrategy<Value> {
    let fragment = prop::sample::select(
        &[
            "The principal `",
            "` lacks the required data action `",
            "Microsoft.CognitiveServices/accounts/OpenAI/responses/write",
            "` to perform",
            "audience is incorrect (",
            " or ",
            ")",
            "Access denied due to invalid subscription key",
            "Virtual Network/Firewall rules",
            "approved private endpoint",
            "A Virtual Network is configured",
            "custom subdomain for token authentication",
            "API version not supported",
            "is enabled only for api versions",
            "Resource not found",
            "Tenant provided in token does not match",
            "`",
            "(",
            "é",
            "",
        ][..],
    );
    let message = prop_oneof![
        3 => prop::collection::vec(prop_oneof![fragment.prop_map(str::to_owned), re("\\PC{0,8}")], 0..8)
            .prop_map(|parts| parts.concat()),
        1 => re("\\PC{0,30}"),
    ];
    let code = prop_oneof![
        prop::sample::select(
            &[
                "PermissionDenied",
                "AuthenticationTypeDisabled",
                "DeploymentNotFound",
                "unknown_model",
                "404",
                "401",
                "Tenant provided in token does not match resource token",
                "parameter_not_supported",
            ][..]
        )
        .prop_map(|c| Value::String(c.to_owned())),
        json_value(),
    ];
    prop_oneof![
        (code.clone(), message.clone())
            .prop_map(|(c, m)| json!({"error": {"code": c, "message": m}})),
        message
            .clone()
            .prop_map(|m| json!({"statusCode": 401, "message": m})),
        (message.clone(), json_value()).prop_map(|(m, loc)| {
            json!({"code": "parameter_not_supported", "message": m, "detail": {"loc": loc}})
        }),
        (code, message, json_value()).prop_map(|(c, m, extra)| {
            json!({"error": {"code": c, "message": m, "innererror": extra}, "message": m})
        }),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config(7))]

    /// `upstream_refusal` with any status, body, claims and model: never panics; it explains
    /// only statuses worth reading and always explains 401/403; an explanation keeps Azure's
    /// status and answer, and its body is OpenAI-shaped JSON.
    #[test]
    fn upstream_refusals_classified(
        ctx in context(),
        status in prop_oneof![
            3 => prop::sample::select(&[400u16, 401, 403, 404, 422, 429, 500][..]),
            1 => 100u16..1000,
        ],
        body in hostile(azure_error),
        claims in claims(),
        model in proptest::option::of(re("\\PC{0,12}")),
    ) {
        let status = StatusCode::from_u16(status).expect("status");
        let explained = diagnose::upstream_refusal(
            &ctx,
            status,
            &body,
            claims.as_ref(),
            RequestFacts { model: model.as_deref(), api_version: None },
        );
        if !diagnose::worth_reading(status) {
            prop_assert!(explained.is_none());
        }
        if matches!(status.as_u16(), 401 | 403) {
            prop_assert!(explained.is_some());
        }
        if let Some(error) = explained {
            prop_assert_eq!(error.status, status);
            prop_assert!(!error.code.as_str().is_empty() && !error.message.is_empty());
            prop_assert_eq!(error.upstream.as_ref().map(|u| u.status), Some(status.as_u16()));
            let body: Value = serde_json::from_slice(&error.body()).expect("JSON body");
            prop_assert_eq!(&body["error"]["code"], &json!(error.code));
        }
    }
}
