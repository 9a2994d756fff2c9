//! The demo world: fixed, GUID-shaped identities that `EmulatorConfig::default()` registers.
//!
//! These are emulator-only values, published on purpose; none of them exist in real Entra ID,
//! including the certificate and keys below (`demo-client-cert*.{pem,p12}`,
//! `unregistered-client-cert.pem`).

/// Tenant that owns the emulated Foundry resource.
pub const TENANT_ID: &str = "1395b117-d37e-42c2-b8b7-8fd5bf49de34";
/// A domain name that addresses [`TENANT_ID`] at the token endpoint.
pub const TENANT_DOMAIN: &str = "emulator.onmicrosoft.com";

/// App with the "Azure AI User" role: everything works.
pub const CLIENT_ID: &str = "207e31d4-d75a-41be-af99-c24d4b17c1c5";
/// Secret of [`CLIENT_ID`].
pub const CLIENT_SECRET: &str = "Gnw8Q~npp2aAcPXU3PPYh0sfCmjrdU0wel8iNOHs";
/// Service principal object id of [`CLIENT_ID`].
pub const OBJECT_ID: &str = "e4e1e7c1-d602-4419-ac78-384fbef61ae1";

/// App in the same tenant with only "Contributor" (no data actions): inference gets PermissionDenied.
pub const NO_ROLE_CLIENT_ID: &str = "8e46fd11-35d7-4ffa-9c1e-a0db2bd8b8e2";
/// Secret of [`NO_ROLE_CLIENT_ID`].
pub const NO_ROLE_CLIENT_SECRET: &str = "ghS8Q~h7DQWnFoNPtoYSUZ1iySvczRq9jZ2yvr3c";
/// Service principal object id of [`NO_ROLE_CLIENT_ID`].
pub const NO_ROLE_OBJECT_ID: &str = "9c0c996b-3617-4e30-85d7-f19b587a9c05";

/// App in the same tenant with only "Cognitive Services OpenAI User": the resource's OpenAI
/// routes work, but the project endpoint refuses it with PermissionDenied for
/// `Microsoft.CognitiveServices/accounts/AIServices/agents/write` (docs/azure-facts.md §6, §7).
pub const OPENAI_USER_CLIENT_ID: &str = "fc947c51-3556-49c7-8c8c-1743fa2f87a9";
/// Secret of [`OPENAI_USER_CLIENT_ID`].
pub const OPENAI_USER_CLIENT_SECRET: &str = "1dv8Q~snOsPcgW3xheKpvaVBlTrzgTFJEyYUu3dd";
/// Service principal object id of [`OPENAI_USER_CLIENT_ID`].
pub const OPENAI_USER_OBJECT_ID: &str = "5964b146-8f33-4492-8d0f-5ee435d49c04";

/// A second tenant, not the resource's.
pub const OTHER_TENANT_ID: &str = "4e859687-b826-4154-8851-baf11b078d4a";
/// App in [`OTHER_TENANT_ID`]: its tokens hit "Token tenant ... does not match resource tenant".
pub const OTHER_CLIENT_ID: &str = "3697e39d-7bfc-4616-99a0-7b54583a9d4c";
/// Secret of [`OTHER_CLIENT_ID`].
pub const OTHER_CLIENT_SECRET: &str = "nbi8Q~yvXQKmkbtFuNQGlOMkdNkYkWwynQjRK9zZ";
/// Service principal object id of [`OTHER_CLIENT_ID`].
pub const OTHER_OBJECT_ID: &str = "e38dfac2-6e94-4418-ad15-70b21d501fa5";

/// App in [`TENANT_ID`] whose (correct) secret has expired: AADSTS7000222.
pub const EXPIRED_CLIENT_ID: &str = "7553cd73-544e-4a20-b809-f372ee458fc4";
/// Secret of [`EXPIRED_CLIENT_ID`] (right value, expired).
pub const EXPIRED_CLIENT_SECRET: &str = "kWK8Q~nbJlASGTPnmuwwBh1Pz1Jf8kzWchxqZ42v";
/// Service principal object id of [`EXPIRED_CLIENT_ID`].
pub const EXPIRED_OBJECT_ID: &str = "ac913095-0176-44aa-b1c5-c5ff1fb420b6";

/// Chat deployment (model gpt-4o-mini-2024-07-18).
pub const CHAT_DEPLOYMENT: &str = "gpt-4o-mini";
/// Embeddings deployment (model text-embedding-3-small, 1536 dimensions).
pub const EMBEDDING_DEPLOYMENT: &str = "text-embedding-3-small";
/// Audio transcription deployment (model whisper).
pub const TRANSCRIPTION_DEPLOYMENT: &str = "whisper";
/// Image generation deployment (model dall-e-3).
pub const IMAGE_DEPLOYMENT: &str = "dall-e-3";
/// Claude deployment (model claude-sonnet-4-5), served only on the Anthropic Messages API
/// (`/anthropic/v1/messages`); the OpenAI routes answer it with `api_not_supported`.
pub const CLAUDE_DEPLOYMENT: &str = "claude-sonnet-4-5";
/// The scope the proxy asks for by default.
pub const SCOPE: &str = "https://cognitiveservices.azure.com/.default";
/// The Foundry project on the resource, served at `/api/projects/demo-project/openai/v1/…`.
pub const PROJECT: &str = "demo-project";
/// The scope a project endpoint needs: its tokens must have `aud` `https://ai.azure.com`
/// (docs/azure-facts.md §7).
pub const PROJECT_SCOPE: &str = "https://ai.azure.com/.default";

// ---- Certificate credentials (emulator-only) ----
//
// A self-signed RSA 2048 certificate and its key, generated once with openssl for this repository
// and published on purpose. Registered only on the emulator's demo app; it protects nothing.

/// Certificate and PKCS#8 private key of [`CLIENT_ID`] in one PEM text (certificate first), as
/// users keep them for `AZURE_CLIENT_CERTIFICATE_PATH`. Emulator-only.
pub const CERTIFICATE_PEM: &str = include_str!("demo-client-cert.pem");
/// The same certificate and key as PKCS#12 with modern encryption (AES-256-CBC, PBKDF2,
/// HMAC-SHA256 MAC), password [`CERTIFICATE_P12_PASSWORD`]. Emulator-only.
pub const CERTIFICATE_P12: &[u8] = include_bytes!("demo-client-cert.p12");
/// The same certificate and key as legacy PKCS#12 (RC2-40 certificate bag, 3DES key bag, SHA-1
/// MAC; `openssl pkcs12 -export -legacy`), password [`CERTIFICATE_P12_PASSWORD`]. Emulator-only.
pub const CERTIFICATE_P12_LEGACY: &[u8] = include_bytes!("demo-client-cert-legacy.p12");
/// Password of [`CERTIFICATE_P12`] and [`CERTIFICATE_P12_LEGACY`].
pub const CERTIFICATE_P12_PASSWORD: &str = "emulator";
/// `x5t` of [`CERTIFICATE_PEM`]: base64url SHA-1 of the certificate's DER.
pub const CERTIFICATE_X5T: &str = "Rx4JCmpPZpP6RxnGITF1aTcuQAQ";
/// `x5t#S256` of [`CERTIFICATE_PEM`]: base64url SHA-256 of the certificate's DER.
pub const CERTIFICATE_X5T_S256: &str = "3V1gr7jRX503d_PrW5LwRxwfqczfsku_Ru6UZblEsCI";
/// SHA-1 thumbprint of [`CERTIFICATE_PEM`] as the portal and AADSTS700027 print it.
pub const CERTIFICATE_THUMBPRINT: &str = "471E090A6A4F6693FA4719C621317569372E4004";

/// A second certificate and key (same layout as [`CERTIFICATE_PEM`]) registered on no app: an
/// assertion signed with it gets AADSTS700027. Emulator-only.
pub const UNREGISTERED_CERTIFICATE_PEM: &str = include_str!("unregistered-client-cert.pem");
/// `x5t` of [`UNREGISTERED_CERTIFICATE_PEM`].
pub const UNREGISTERED_CERTIFICATE_X5T: &str = "YaWp1yCftbEZlbyM_u79bS6g-kQ";
/// `x5t#S256` of [`UNREGISTERED_CERTIFICATE_PEM`].
pub const UNREGISTERED_CERTIFICATE_X5T_S256: &str = "COF41WLPTYAmrVaunoaBQVD2sS813SQ-Ti-Ls-diqqo";

// ---- Workload identity federation (emulator-only) ----

/// The emulator's OIDC issuer (`EmulatorConfig::federation_issuer` by default), standing in
/// for a cluster's service-account issuer.
pub const FEDERATION_ISSUER: &str = "https://oidc.emulator.local/";
/// Subject of the federated credential on [`CLIENT_ID`]: the pod's service account.
pub const FEDERATED_SUBJECT: &str = "system:serviceaccount:default:foundry-proxy";
/// Audience of projected service-account tokens for workload identity (docs/docs/azure-facts.md §2).
pub const FEDERATED_AUDIENCE: &str = "api://AzureADTokenExchange";

// ---- Managed identities (emulator-only) ----

/// Client id of the system-assigned managed identity (role "Azure AI User", resource tenant).
pub const MI_CLIENT_ID: &str = "5a8d4f0e-2c77-4b61-9e0a-3f1d6c8b2e94";
/// Object (principal) id of the system-assigned managed identity.
pub const MI_OBJECT_ID: &str = "c3b7e2a9-81d4-4f6e-a5c0-7d2e9b4f1a63";
/// ARM resource id of the VM that owns the system-assigned identity.
pub const MI_RESOURCE_ID: &str = "/subscriptions/0b1e6f6c-95a4-4c1e-8a0e-5c3d7e2f9a10/resourceGroups/emulator-rg/providers/Microsoft.Compute/virtualMachines/emulator-vm";
/// Client id of the user-assigned managed identity (role "Azure AI User", resource tenant).
pub const USER_MI_CLIENT_ID: &str = "e91c3a57-6d02-4b8f-b4e1-2a9f7c5d0e38";
/// Object (principal) id of the user-assigned managed identity.
pub const USER_MI_OBJECT_ID: &str = "7f2d9b14-c6a3-4e85-9d10-b8e4a3c7f256";
/// ARM resource id of the user-assigned managed identity.
pub const USER_MI_RESOURCE_ID: &str = "/subscriptions/0b1e6f6c-95a4-4c1e-8a0e-5c3d7e2f9a10/resourceGroups/emulator-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/emulator-identity";
/// `IDENTITY_HEADER` of the emulated App Service / Container Apps host: the value
/// `X-IDENTITY-HEADER` must carry (`EmulatorConfig::identity_header` by default).
pub const IDENTITY_HEADER: &str = "emulator-identity-header-6f1c2b9e";

// ---- Management plane: ARM and Graph (emulator-only) ----

/// The subscription that holds the emulated Foundry resource (ARM `GET /subscriptions`).
pub const SUBSCRIPTION_ID: &str = "0b1e6f6c-95a4-4c1e-8a0e-5c3d7e2f9a10";
/// A second subscription, so a resource name can be ambiguous across subscriptions.
pub const OTHER_SUBSCRIPTION_ID: &str = "6d3c1a92-4e7b-4f05-b8d1-9a2e5c7f0b34";
/// The resource group of the emulated accounts.
pub const RESOURCE_GROUP: &str = "emulator-rg";
/// The Cognitive Services account whose endpoint is the emulator itself (custom subdomain,
/// kind `AIServices`, key authentication disabled).
pub const ACCOUNT_NAME: &str = "emulator-foundry";
/// An account without a custom subdomain (regional endpoint): Entra ID cannot be used with it.
pub const REGIONAL_ACCOUNT_NAME: &str = "emulator-regional";
/// An account of a kind that serves no chat inference (`SpeechServices`).
pub const SPEECH_ACCOUNT_NAME: &str = "emulator-speech";
/// An account name that exists in both subscriptions.
pub const TWIN_ACCOUNT_NAME: &str = "emulator-twin";
