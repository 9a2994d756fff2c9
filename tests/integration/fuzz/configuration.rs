//! Configuration: the TOML file and the whole load.

use super::generators::*;
use super::*;

/// Values for each settings key: the valid ones and the near misses, in TOML's types.
fn toml_value(key: &str) -> BoxedStrategy<String> {
    let quoted = |choices: &'static [&'static str]| {
        prop::sample::select(choices).prop_map(toml_string).boxed()
    };
    let generic = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        re("\\PC{0,12}").prop_map(|s| toml_string(&s)),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("1.5".to_owned()),
        Just("1979-05-27".to_owned()),
    ]
    .boxed();
    let specific = match key {
        "listen" | "metrics_listen" => quoted(&[
            "127.0.0.1:8080",
            "0.0.0.0:8080",
            "[::1]:1",
            "[::]:80",
            "127.0.0.1",
            "x:1",
            "",
            "127.0.0.1:99999",
        ]),
        "endpoint" | "authority_host" => quoted(&[
            "https://contoso.openai.azure.com",
            "http://127.0.0.1:8081",
            "http://localhost",
            "http://example.com",
            "https://u:p@x.com",
            "https://x.com/?q=1",
            "https://x.com/#f",
            "ftp://x.com",
            "https://x.azure.us/",
            "not a url",
            "https://",
            "https://[::1]/",
            "http://[::1]:1/a/",
            "https://x.com/openai/v1",
        ]),
        "tenant_id" | "client_id" => quoted(&[
            "11111111-1111-1111-1111-111111111111",
            "common",
            "contoso.onmicrosoft.com",
            "a b",
            "",
            " ",
            "é",
        ]),
        "scope" => quoted(&[
            "https://cognitiveservices.azure.com/.default",
            "/.default",
            "x/.default",
            "a b/.default",
            "https://x.com",
        ]),
        "api" => quoted(&[
            "openai-v1",
            "v1",
            "deployments",
            "models",
            "passthrough",
            "x",
            "",
        ]),
        "api_version" => quoted(&["2024-10-21", "", "a b", "x&y", "2025-04-01-preview"]),
        "max_body" => prop_oneof![
            quoted(&[
                "32MiB",
                "0",
                "1k",
                "1 GiB",
                "18446744073709551615gib",
                "x",
                "-1",
                ""
            ]),
            any::<u64>().prop_map(|n| n.to_string()).boxed(),
            Just("0".to_owned()).boxed(),
        ]
        .boxed(),
        "upstream_timeout_secs" | "shutdown_grace_secs" => prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            Just("-1".to_owned()),
            Just("18446744073709551615".to_owned()),
        ]
        .boxed(),
        "allow_anonymous" => prop_oneof![Just("true".to_owned()), Just("false".to_owned())].boxed(),
        "keys_file" => quoted(&["/nonexistent/keys.toml", "", "keys.toml"]),
        "cors_origins" => prop::collection::vec(
            prop::sample::select(
                &[
                    "*",
                    "http://localhost:3000",
                    "http://x.com/",
                    "https://x.com/path",
                    "x",
                    "",
                ][..],
            ),
            0..3,
        )
        .prop_map(|v| {
            format!(
                "[{}]",
                v.iter()
                    .map(|s| toml_string(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .boxed(),
        _ => quoted(&["", "x"]),
    };
    prop_oneof![4 => specific, 1 => generic].boxed()
}

pub(super) fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const SETTINGS_KEYS: &[&str] = &[
    "listen",
    "tenant_id",
    "client_id",
    "client_secret",
    "authority_host",
    "scope",
    "endpoint",
    "api",
    "api_version",
    "max_body",
    "upstream_timeout_secs",
    "shutdown_grace_secs",
    "keys_file",
    "allow_anonymous",
    "metrics_listen",
    "cors_origins",
    "unknown_key",
];

const CREDENTIAL_KEYS: &[&str] = &[
    "kind",
    "client_secret_file",
    "certificate_path",
    "certificate_password",
    "send_certificate_chain",
    "federated_token_file",
    "identity_endpoint",
    "identity_header",
    "imds_endpoint",
    "object_id",
    "resource_id",
];

fn config_text() -> BoxedStrategy<String> {
    let entry = |keys: &'static [&'static str]| {
        prop::sample::select(keys)
            .prop_flat_map(|key| toml_value(key).prop_map(move |value| format!("{key} = {value}")))
    };
    (
        prop::collection::vec(entry(SETTINGS_KEYS), 0..10),
        proptest::option::of(prop::collection::btree_map(
            re("[a-z0-9-]{1,6}|\"\\PC{0,4}\""),
            prop_oneof![
                re("[a-zA-Z0-9._-]{1,10}").prop_map(|s| toml_string(&s)),
                re("\\PC{0,8}").prop_map(|s| toml_string(&s)),
                Just("1".to_owned()),
            ],
            0..3,
        )),
        proptest::option::of(prop::collection::vec(
            prop_oneof![
                prop::sample::select(
                    &[
                        "kind = \"client-secret\"",
                        "kind = \"managed-identity\"",
                        "kind = \"azure-cli\"",
                        "kind = \"workload-identity\"",
                        "kind = \"auto\"",
                        "kind = \"nope\"",
                    ][..]
                )
                .prop_map(str::to_owned),
                entry(CREDENTIAL_KEYS),
            ],
            0..4,
        )),
    )
        .prop_map(|(top, models, credential)| {
            let mut text = top.join("\n");
            if let Some(models) = models {
                text.push_str("\n[models]\n");
                for (alias, deployment) in models {
                    text.push_str(&format!("{alias} = {deployment}\n"));
                }
            }
            if let Some(credential) = credential {
                text.push_str("\n[credential]\n");
                text.push_str(&credential.join("\n"));
            }
            text.push('\n');
            text
        })
        .boxed()
}

fn environment() -> BoxedStrategy<BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(
            &[
                "FOUNDRY_ENDPOINT",
                "AZURE_TENANT_ID",
                "AZURE_CLIENT_ID",
                "AZURE_CLIENT_SECRET",
                "FOUNDRY_PROXY_LISTEN",
                "FOUNDRY_PROXY_MAX_BODY",
                "FOUNDRY_PROXY_UPSTREAM_TIMEOUT",
                "FOUNDRY_PROXY_ALLOW_ANONYMOUS",
                "FOUNDRY_PROXY_CORS_ORIGINS",
                "FOUNDRY_CREDENTIAL",
                "IDENTITY_ENDPOINT",
                "IDENTITY_HEADER",
                "IMDS_ENDPOINT",
            ][..],
        )
        .prop_map(str::to_owned),
        prop_oneof![
            prop::sample::select(
                &[
                    "https://contoso.openai.azure.com",
                    "http://127.0.0.1:1",
                    "11111111-1111-1111-1111-111111111111",
                    "secret",
                    "0.0.0.0:1",
                    "true",
                    "managed-identity",
                    "1MiB",
                    "x",
                ][..]
            )
            .prop_map(str::to_owned),
            re("\\PC{0,10}"),
        ],
        0..5,
    )
    .boxed()
}

/// The security invariants of any configuration that validates.
fn check_config(config: &config::Config) -> Result<(), TestCaseError> {
    for url in [&config.endpoint, &config.authority_host] {
        prop_assert!(
            url.scheme() == "https" || (url.scheme() == "http" && config::is_loopback(url)),
            "{}",
            url
        );
        prop_assert!(url.query().is_none() && url.fragment().is_none());
        prop_assert!(url.username().is_empty() && url.password().is_none());
    }
    prop_assert!(
        config.listen.ip().is_loopback() || config.keys_file.is_some() || config.allow_anonymous,
        "{} is open without keys",
        config.listen
    );
    prop_assert!(config.scope.ends_with("/.default"));
    prop_assert!(config.max_body > 0);
    for deployment in config.models.values() {
        prop_assert!(foundry_proxy::upstream::is_valid_deployment_name(
            deployment
        ));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(9))]

    /// Any text as a config file: `Settings::from_file` and the whole `config::load` never
    /// panic; errors name a setting; a configuration that loads keeps the security invariants.
    #[test]
    fn config_files_load_or_explain(
        text in prop_oneof![
            3 => config_text().prop_map(String::into_bytes),
            1 => (config_text(), edits()).prop_map(|(t, e)| apply(t.into_bytes(), &e)),
            1 => prop::collection::vec(any::<u8>(), 0..200),
            1 => re("\\PC{0,200}").prop_map(String::into_bytes),
        ],
        env in environment(),
    ) {
        let dir = TempDir::new();
        let path = dir.file("config.toml", &text);
        if let Err(e) = Settings::from_file(&path) {
            prop_assert!(!e.setting.is_empty() && !e.problem.is_empty());
        }
        match config::load(Some(&path), &env, Settings::default()) {
            Ok(config) => check_config(&config)?,
            Err(e) => prop_assert!(!e.setting.is_empty() && !e.problem.is_empty()),
        }
    }
}
