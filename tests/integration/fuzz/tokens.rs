//! Tokens: Entra's token endpoint answers, managed identity answers, the refresher.

use super::generators::*;
use super::refusals::context;
use super::*;

/// `expires_in` in every shape Entra, IMDS or a broken endpoint could send.
fn lifetime() -> BoxedStrategy<Value> {
    prop_oneof![
        2 => (0u64..100_000).prop_map(Value::from),
        1 => number(),
        1 => prop::sample::select(&[
            "3599", " 10 ", "0", "-5", "1e300", "1e19", "18446744073709551615",
            "18446744073709551616", "NaN", "inf", "-inf", "", "soon", "1.5", "9e15",
        ][..]).prop_map(|s| Value::String(s.to_owned())),
        1 => prop::sample::select(&[1e300, 1.8e19, 9.2e18, 1e17, 3.2e10, -1.0, 0.5][..])
            .prop_map(Value::from),
        1 => json_value(),
    ]
    .boxed()
}

fn token_answer() -> BoxedStrategy<Value> {
    (
        proptest::option::of(prop_oneof![
            3 => re("[A-Za-z0-9._-]{1,40}").prop_map(Value::String),
            1 => text().prop_map(Value::String),
            1 => json_value(),
        ]),
        proptest::option::of(lifetime()),
        proptest::option::of(lifetime()),
        proptest::option::of(prop_oneof![
            Just(json!("Bearer")),
            Just(json!("bearer")),
            Just(json!("pop")),
            json_value(),
        ]),
    )
        .prop_map(|(token, expires_in, expires_on, token_type)| {
            let mut members = Map::new();
            for (name, value) in [
                ("access_token", token),
                ("expires_in", expires_in),
                ("expires_on", expires_on),
                ("token_type", token_type),
            ] {
                if let Some(value) = value {
                    members.insert(name.into(), value);
                }
            }
            Value::Object(members)
        })
        .boxed()
}

fn entra_error() -> BoxedStrategy<Value> {
    (
        prop_oneof![Just(json!("invalid_client")), json_value()],
        prop_oneof![
            re("AADSTS[0-9]{0,25}: \\PC{0,20}(\r\n\\PC{0,10}){0,2}").prop_map(Value::String),
            json_value(),
        ],
        proptest::option::of(prop_oneof![
            prop::collection::vec(any::<u64>(), 0..3).prop_map(|c| json!(c)),
            json_value(),
        ]),
        proptest::option::of(json_value()),
    )
        .prop_map(|(error, description, codes, trace)| {
            let mut members = Map::new();
            members.insert("error".into(), error);
            members.insert("error_description".into(), description);
            if let Some(codes) = codes {
                members.insert("error_codes".into(), codes);
            }
            if let Some(trace) = trace {
                members.insert("trace_id".into(), trace);
            }
            Value::Object(members)
        })
        .boxed()
}

/// A credential that hands out one given token, then never answers again.
#[derive(Debug)]
struct OneToken(Mutex<Option<AccessToken>>);

impl Credential for OneToken {
    fn get_token(&self) -> TokenFuture<'_> {
        let token = self.0.lock().expect("lock").take();
        Box::pin(async move {
            match token {
                Some(token) => Ok(token),
                None => std::future::pending().await,
            }
        })
    }

    fn kind(&self) -> &'static str {
        "fuzz"
    }
}

/// Hands `token` to a running refresher: the refresher must survive it (a panic in the
/// refresher task is a dead proxy: the release build aborts on panic).
fn through_refresher(token: AccessToken) -> Result<(), TestCaseError> {
    block_on(async move {
        let lifetime = token.expires_in;
        let cell = TokenCell::new(TokenPolicy::default(), "fuzz");
        let shutdown = CancellationToken::new();
        let task = spawn_refresher(
            Arc::clone(&cell),
            Arc::new(OneToken(Mutex::new(Some(token)))),
            shutdown.clone(),
        );
        let held = tokio::time::timeout(Duration::from_secs(5), cell.usable_token()).await;
        shutdown.cancel();
        let joined = task.await;
        prop_assert!(
            joined.is_ok(),
            "the refresher died on a token of lifetime {:?}: {:?}",
            lifetime,
            joined
        );
        let held = held.map_err(|_| TestCaseError::fail("no attempt finished"))?;
        if let Ok(held) = held {
            prop_assert!(held.lifetime <= lifetime);
            let state = cell.load();
            prop_assert!(state.next_refresh.is_some());
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(config(5))]

    /// `parse_token_response` with any status and body: never panics; a token only from a 2xx
    /// with a non-empty token; a rejection only from a non-2xx, with that status, a one-line
    /// description; every error explains as OpenAI-shaped JSON.
    #[test]
    fn entra_answers_parsed(
        status in prop_oneof![
            2 => Just(200u16),
            1 => prop::sample::select(&[400u16, 401, 429, 500, 503][..]),
            1 => any::<u16>(),
        ],
        body in hostile(|| prop_oneof![token_answer(), entra_error()]),
        ctx in context(),
    ) {
        match parse_token_response(status, &body) {
            Ok(token) => {
                prop_assert!((200..300).contains(&status));
                prop_assert!(!token.token.expose().is_empty());
            }
            Err(error) => {
                if let CredentialError::Rejected(entra) = &error {
                    prop_assert!(!(200..300).contains(&status));
                    prop_assert_eq!(entra.status, status);
                    prop_assert!(!entra.description.contains('\n'));
                }
                let explained = diagnose::credential_error(&ctx, &error, 1);
                prop_assert!(serde_json::from_slice::<Value>(&explained.body()).is_ok());
            }
        }
    }
}

proptest! {
    #![proptest_config(config(5))]

    /// Whatever lifetime a token endpoint grants, the refresher stores the token and keeps
    /// running.
    #[test]
    fn refresher_survives_any_lifetime(
        body in token_answer().prop_map(|v| v.to_string().into_bytes()),
        seconds in prop_oneof![
            Just(u64::MAX),
            Just(u64::MAX / 2),
            Just(1u64 << 40),
            any::<u64>(),
            0u64..10_000,
        ],
    ) {
        if let Ok(token) = parse_token_response(200, &body) {
            through_refresher(token)?;
        }
        through_refresher(AccessToken {
            token: Secret::new("header.payload.signature"),
            expires_in: Duration::from_secs(seconds),
        })?;
    }
}

/// What the fake identity endpoint answers next.
#[derive(Debug, Clone, Default)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Vec<u8>,
}

/// A minimal HTTP/1.1 endpoint that answers every request with the current [`Answer`].
async fn identity_endpoint(answer: Arc<Mutex<Answer>>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.lock().expect("lock").clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 2048];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let mut head = format!(
                    "HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                    answer.status,
                    answer.body.len()
                );
                if let Some(value) = &answer.retry_after {
                    head.push_str(&format!("retry-after: {value}\r\n"));
                }
                head.push_str("\r\n");
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&answer.body).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    url
}

/// A managed-identity endpoint's answer, with the App Service header's secret echoed in it
/// (where a broken endpoint might put it).
fn identity_answer() -> BoxedStrategy<(Answer, String)> {
    let secret = re("[A-Za-z0-9]{24,40}").prop_map(|s| format!("SECRET{s}"));
    (
        prop_oneof![
            2 => Just(200u16),
            2 => prop::sample::select(&[400u16, 401, 403, 404, 410, 429, 500, 503][..]),
            1 => 200u16..600,
        ],
        proptest::option::of(prop_oneof![
            Just("0".to_owned()),
            Just("1".to_owned()),
            Just("Wed, 21 Oct 2015 07:28:00 GMT".to_owned()),
            re("[ -~]{0,10}"),
        ]),
        secret,
        // Around the 200-character cut of a plain-text body, mostly.
        prop_oneof![0usize..260, 150usize..200],
        prop_oneof![
            2 => token_answer().prop_map(|v| (v, false)),
            1 => Just((Value::Null, true)),
            1 => json_value().prop_map(|v| (v, false)),
        ],
        re("[ -~]{0,30}"),
        prop::sample::select(&["error_description", "message", "Message", "error"][..]),
    )
        .prop_map(
            |(status, retry_after, secret, pad, (document, echo), tail, field)| {
                let body = if echo {
                    // The secret straddles the 200-character cut of a plain-text body, or sits in
                    // an error's own words.
                    if pad % 2 == 0 {
                        format!("{}{secret}{tail}", "x".repeat(pad)).into_bytes()
                    } else {
                        json!({field: format!("{}{secret}{tail}", "y".repeat(pad))})
                            .to_string()
                            .into_bytes()
                    }
                } else {
                    document.to_string().into_bytes()
                };
                (
                    Answer {
                        status,
                        retry_after,
                        body,
                    },
                    secret,
                )
            },
        )
        .boxed()
}

/// The first half of `secret` (a cut that leaves more would be a leak too).
fn half(secret: &str) -> &str {
    &secret[..secret.len() / 2]
}

#[test]
fn managed_identity_answers() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = foundry_proxy::tls::client_config(None).expect("tls");
    let answer = Arc::new(Mutex::new(Answer::default()));
    let url = block_on(identity_endpoint(Arc::clone(&answer)));
    // Not through `proptest!`, so `PROPTEST_CASES` is read here: a hundredth of it.
    let mut config = config(100);
    if let Some(cases) = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
    {
        config.cases = (cases / 100).max(1);
    }
    let mut runner = proptest::test_runner::TestRunner::new(config);
    runner
        .run(
            &(identity_answer(), any::<bool>()),
            |((next, secret), app_service)| {
                *answer.lock().expect("lock") = next.clone();
                let endpoint = if app_service {
                    ManagedIdentityEndpoint::AppService {
                        endpoint: Url::parse(&format!("{url}/msi/token")).expect("url"),
                        header: Secret::new(secret.clone()),
                    }
                } else {
                    ManagedIdentityEndpoint::Imds {
                        endpoint: Url::parse(&url).expect("url"),
                    }
                };
                let credential = ManagedIdentityCredential::new(
                    endpoint,
                    IdentitySelector::SystemAssigned,
                    "https://cognitiveservices.azure.com/.default",
                    Arc::clone(&tls),
                )
                .expect("credential")
                .with_retry_base(Duration::ZERO);
                let shown = format!("{credential:?}");
                prop_assert!(!shown.contains(half(&secret)));
                let outcome = block_on(credential.get_token());
                match outcome {
                    Ok(token) => {
                        prop_assert!((200..300).contains(&next.status));
                        prop_assert!(!token.token.expose().trim().is_empty());
                        prop_assert!(token.expires_in >= Duration::from_secs(1));
                    }
                    Err(error) => {
                        let shown = error.to_string();
                        if app_service {
                            prop_assert!(
                                !shown.contains(half(&secret)),
                                "the identity header leaked: {}",
                                shown
                            );
                        }
                        prop_assert!(
                            matches!(error, CredentialError::Source { .. }),
                            "{:?}",
                            error
                        );
                    }
                }
                Ok(())
            },
        )
        .unwrap();
}
