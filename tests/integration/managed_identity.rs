//! The managed-identity credential against the emulator's IMDS and App Service endpoints,
//! over real sockets on 127.0.0.1: identity selection, retries, and each refusal's catalog code.

use std::time::{Duration, Instant};

use foundry_proxy::claims::TokenClaims;
use foundry_proxy::config::credential::{IdentitySelector, ManagedIdentityEndpoint};
use foundry_proxy::credential::managed_identity::ManagedIdentityCredential;
use foundry_proxy::credential::{AccessToken, Credential, CredentialError};
use foundry_proxy::emulator::{self, EmulatorConfig, ImdsFault, RunningEmulator, identities};
use foundry_proxy::secret::Secret;
use url::Url;

const SCOPE: &str = "https://cognitiveservices.azure.com/.default";
const RESOURCE: &str = "https://cognitiveservices.azure.com";
/// Short enough that six retries take well under a second.
const FAST_RETRY: Duration = Duration::from_millis(5);

async fn start() -> RunningEmulator {
    emulator::spawn(EmulatorConfig::default())
        .await
        .expect("emulator starts")
}

fn imds(emu: &RunningEmulator) -> ManagedIdentityEndpoint {
    ManagedIdentityEndpoint::Imds {
        endpoint: Url::parse(&emu.url()).expect("url"),
    }
}

fn app_service(emu: &RunningEmulator, header: &str) -> ManagedIdentityEndpoint {
    ManagedIdentityEndpoint::AppService {
        endpoint: Url::parse(&format!("{}/msi/token", emu.url())).expect("url"),
        header: Secret::new(header),
    }
}

fn credential(
    endpoint: ManagedIdentityEndpoint,
    selector: IdentitySelector,
) -> ManagedIdentityCredential {
    let tls = foundry_proxy::tls::client_config(None).expect("tls");
    ManagedIdentityCredential::new(endpoint, selector, SCOPE, tls)
        .expect("credential")
        .with_retry_base(FAST_RETRY)
}

/// The token's claims, checked to be for the Foundry resource and the identity `oid`.
fn assert_token_of(token: &AccessToken, object_id: &str, client_id: &str) {
    let claims = TokenClaims::decode(token.token.expose()).expect("a JWT");
    assert_eq!(claims.oid.as_deref(), Some(object_id));
    assert_eq!(claims.app_id(), Some(client_id));
    assert_eq!(claims.aud.as_deref(), Some(RESOURCE));
    assert!(
        token.expires_in > Duration::from_secs(60),
        "{:?}",
        token.expires_in
    );
    assert!(
        token.expires_in <= Duration::from_secs(86_400),
        "{:?}",
        token.expires_in
    );
}

/// The `Source` error's code, detail and transience (panics on any other outcome).
fn source_error(outcome: Result<AccessToken, CredentialError>) -> (&'static str, String, bool) {
    match outcome {
        Err(CredentialError::Source {
            code,
            detail,
            transient,
        }) => (code.as_str(), detail, transient),
        other => panic!("expected a Source error, got {other:?}"),
    }
}

/// With no selector, IMDS gives the system-assigned identity's token, for the resource
/// (the scope without `/.default`), with IMDS's string-typed lifetime read correctly.
#[tokio::test]
async fn imds_system_assigned() {
    let emu = start().await;
    let cred = credential(imds(&emu), IdentitySelector::SystemAssigned);
    assert_eq!(cred.kind(), "managed-identity");
    let token = cred.get_token().await.expect("token");
    assert_token_of(&token, identities::MI_OBJECT_ID, identities::MI_CLIENT_ID);
    assert_eq!(emu.emulator.imds_requests(), 1);
}

/// A user-assigned identity can be chosen by client id, object id or resource id, and the
/// token is that identity's.
#[tokio::test]
async fn imds_user_assigned_by_each_selector() {
    let emu = start().await;
    for selector in [
        IdentitySelector::ClientId(identities::USER_MI_CLIENT_ID.into()),
        IdentitySelector::ObjectId(identities::USER_MI_OBJECT_ID.into()),
        IdentitySelector::ResourceId(identities::USER_MI_RESOURCE_ID.into()),
    ] {
        let token = credential(imds(&emu), selector.clone())
            .get_token()
            .await
            .unwrap_or_else(|e| panic!("{selector:?}: {e}"));
        assert_token_of(
            &token,
            identities::USER_MI_OBJECT_ID,
            identities::USER_MI_CLIENT_ID,
        );
    }
}

/// IMDS answering 500 twice, then 410 twice, is retried within one `get_token` until it
/// answers the token.
#[tokio::test]
async fn imds_transient_failures_are_retried() {
    let emu = start().await;
    let cred = credential(imds(&emu), IdentitySelector::SystemAssigned);
    for (status, requests) in [(500, 3), (410, 6)] {
        emu.emulator
            .set_imds_fault(Some(ImdsFault { status, times: 2 }));
        let token = cred
            .get_token()
            .await
            .unwrap_or_else(|e| panic!("{status}: {e}"));
        assert_token_of(&token, identities::MI_OBJECT_ID, identities::MI_CLIENT_ID);
        assert_eq!(emu.emulator.imds_requests(), requests, "after {status}");
    }
}

/// An IMDS that keeps failing gets the first attempt and six retries, then the credential
/// reports it unavailable (transient), naming the status and IMDS's words.
#[tokio::test]
async fn imds_still_failing_after_retries_is_unavailable() {
    let emu = start().await;
    emu.emulator.set_imds_fault(Some(ImdsFault {
        status: 503,
        times: 100,
    }));
    let cred = credential(imds(&emu), IdentitySelector::SystemAssigned);
    let (code, detail, transient) = source_error(cred.get_token().await);
    assert_eq!(code, "managed_identity_unavailable");
    assert!(transient);
    assert!(detail.contains("503"), "{detail}");
    assert!(detail.contains("7 attempts"), "{detail}");
    assert!(
        detail.contains("Transient error from the managed identities subsystem"),
        "{detail}"
    );
    assert_eq!(emu.emulator.imds_requests(), 7);
}

/// An identity the host does not have is `managed_identity_not_found`, final (no retries),
/// on IMDS and on App Service alike.
#[tokio::test]
async fn unknown_identity_is_not_found() {
    let emu = start().await;
    let unknown = IdentitySelector::ClientId("00000000-0000-0000-0000-000000000001".into());
    let (code, detail, transient) =
        source_error(credential(imds(&emu), unknown.clone()).get_token().await);
    assert_eq!(code, "managed_identity_not_found");
    assert!(!transient);
    assert!(detail.contains("400"), "{detail}");
    assert!(detail.contains("Identity not found"), "{detail}");
    assert_eq!(emu.emulator.imds_requests(), 1);

    let endpoint = app_service(&emu, identities::IDENTITY_HEADER);
    let (code, detail, transient) = source_error(credential(endpoint, unknown).get_token().await);
    assert_eq!(code, "managed_identity_not_found", "{detail}");
    assert!(!transient);
    assert_eq!(emu.emulator.app_service_requests(), 1);
}

/// App Service / Container Apps with the right `X-IDENTITY-HEADER` gives the system-assigned
/// identity's token (only `expires_on` in the answer) and user-assigned ones by each selector.
#[tokio::test]
async fn app_service_tokens() {
    let emu = start().await;
    let cases = [
        (
            IdentitySelector::SystemAssigned,
            identities::MI_OBJECT_ID,
            identities::MI_CLIENT_ID,
        ),
        (
            IdentitySelector::ClientId(identities::USER_MI_CLIENT_ID.into()),
            identities::USER_MI_OBJECT_ID,
            identities::USER_MI_CLIENT_ID,
        ),
        (
            IdentitySelector::ObjectId(identities::USER_MI_OBJECT_ID.into()),
            identities::USER_MI_OBJECT_ID,
            identities::USER_MI_CLIENT_ID,
        ),
        (
            IdentitySelector::ResourceId(identities::USER_MI_RESOURCE_ID.into()),
            identities::USER_MI_OBJECT_ID,
            identities::USER_MI_CLIENT_ID,
        ),
    ];
    for (selector, object_id, client_id) in cases {
        let cred = credential(
            app_service(&emu, identities::IDENTITY_HEADER),
            selector.clone(),
        );
        let shown = format!("{cred:?}");
        assert!(!shown.contains(identities::IDENTITY_HEADER), "{shown}");
        let token = cred
            .get_token()
            .await
            .unwrap_or_else(|e| panic!("{selector:?}: {e}"));
        assert_token_of(&token, object_id, client_id);
    }
    assert_eq!(emu.emulator.app_service_requests(), 4);
    assert_eq!(emu.emulator.imds_requests(), 0);
}

/// A wrong `X-IDENTITY-HEADER` is refused with 401: `managed_identity_refused`, final, and
/// the detail shows neither the header sent nor the expected one.
#[tokio::test]
async fn app_service_wrong_header_is_refused() {
    let emu = start().await;
    let wrong = "wrong-identity-header-value";
    let cred = credential(app_service(&emu, wrong), IdentitySelector::SystemAssigned);
    let (code, detail, transient) = source_error(cred.get_token().await);
    assert_eq!(code, "managed_identity_refused");
    assert!(!transient);
    assert!(detail.contains("401"), "{detail}");
    assert!(detail.contains("X-IDENTITY-HEADER"), "{detail}");
    assert!(!detail.contains(wrong), "{detail}");
    assert!(!detail.contains(identities::IDENTITY_HEADER), "{detail}");
    assert_eq!(emu.emulator.app_service_requests(), 1);
}

/// Nothing listening at the endpoint: connection errors are retried, then reported as
/// `managed_identity_unavailable` (transient), quickly with a short retry base.
#[tokio::test]
async fn nothing_listening_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let endpoint = ManagedIdentityEndpoint::Imds {
        endpoint: Url::parse(&format!("http://{addr}")).expect("url"),
    };
    let started = Instant::now();
    let (code, detail, transient) = source_error(
        credential(endpoint, IdentitySelector::SystemAssigned)
            .get_token()
            .await,
    );
    assert_eq!(code, "managed_identity_unavailable");
    assert!(transient);
    assert!(detail.contains(&addr.to_string()), "{detail}");
    assert!(detail.contains("could not be reached"), "{detail}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
