//! The demo world: fixed, GUID-shaped identities that `EmulatorConfig::default()` registers.
//!
//! These are emulator-only values, published on purpose; none of them exist in real Entra ID.

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
/// The scope the proxy asks for by default.
pub const SCOPE: &str = "https://cognitiveservices.azure.com/.default";
