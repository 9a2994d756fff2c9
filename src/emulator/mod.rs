//! The built-in emulator of Entra ID and Azure AI Foundry, for tests, `foundry-proxy demo` and CI.
//!
//! One listener serves the Entra v2.0 token endpoint (client credentials with a secret, a
//! certificate assertion or a federated assertion), the managed identity endpoints (IMDS
//! `/metadata/identity/oauth2/token` and App Service `/msi/token`), the Foundry surfaces
//! (`/openai/v1`, `/openai/deployments`, `/models`, `/v1` passthrough, and the project endpoints
//! `/api/projects/{project}/openai/v1`) and the control endpoints under `/_emulator`. Status
//! codes, bodies and headers follow `docs/azure-facts.md`.
//!
//! Two sides, each in its own folder, on a shared core:
//! - `entra`: Entra ID. The token endpoint (`token`), its error shape and every
//!   AADSTS message (`error`, `aadsts`), token signing (`jwt`), client assertions
//!   (`assertion`), registered certificates and their thumbprints (`certificate`, `digest`),
//!   and the managed identity endpoints (`msi`: IMDS, App Service / Container Apps)
//! - `foundry`: inference. The handler and its checks in Azure's order
//!   (`handler`, `route`, `auth`, `fault`, `error`, `body`) and the generated answers and
//!   streams (`chat`, `responses`, `embeddings`, `media`, `text`, `sse`)
//! - shared: `config` and [`identities`] (the emulated world and its fixed demo identities),
//!   `state` and `records` (the shared [`Emulator`], its controls and observations), `control`
//!   (`/_emulator/*`), `server` (router, spawn and shutdown), `util` (clock, ids, forms)
//!
//! The emulator stands alone: nothing under `src/emulator` uses the proxy's modules
//! (a unit test, `layering_tests`, fails if one does), so it behaves like the real
//! services and not like the code it tests.
//!
//! The management plane `setup` uses (docs/azure-facts.md §8), on the same listener: Graph
//! (`graph`: `/v1.0/applications…`, `/v1.0/servicePrincipals`) and ARM (`arm`:
//! `/subscriptions…`: accounts and role assignments), over the apps, service principals and
//! role assignments they create (`directory`), with settable replication and propagation delays.
//!
//! Request headers that steer one Foundry answer (they pass through the proxy):
//! - `x-emulator-fault`: one refusal, played where Azure would refuse (edge, route, credential,
//!   caller or deployment stage; the list and stages are in `foundry::fault`'s docs)
//! - `x-emulator-chunks: N`: the answer has N content chunks (and N completion tokens)
//! - `x-emulator-chunk-delay-ms: MS`: delay between streamed frames
//! - `x-emulator-reset-after: N`: a stream is cut after N frames: the connection is dropped
//!   without the body's end, as when a front end or the network resets it mid-stream
//!
//! Control over HTTP: `GET /_emulator/state`, `POST /_emulator/reset`, and `POST /_emulator/config`
//! with `{"entra_fault": "503" | "stall:MS" | "garbage" | "aadsts:N" | null, "token_lifetime_secs": N,
//! "expires_in_as_string": bool, "roles": {"CLIENT_ID": ["Azure AI User"]},
//! "resource_kind": "foundry" | "openai", "clock_offset_secs": N,
//! "imds_fault": {"status": 503, "times": 2} | null, "app_registration_allowed": bool,
//! "role_assignment_allowed": bool, "replication_delay_ms": N, "propagation_delay_ms": N}`
//! (all optional). `POST
//! /_emulator/federated-token` with `{"subject", "audience", "lifetime_secs"}` (all optional)
//! answers `{"token": JWT}` from the emulator's OIDC issuer (`federation_issuer`), for
//! `AZURE_FEDERATED_TOKEN_FILE`.
//!
//! `GET /_emulator/images/{id}.png` serves the PNG behind the `url` a DALL·E deployment answers.
//!
//! Audiences: the resource's routes take `https://cognitiveservices.azure.com` and
//! `https://ai.azure.com`; a project endpoint only `https://ai.azure.com`, and its own data
//! action `…/AIServices/agents/write` (docs/azure-facts.md §7). The resource kind decides
//! Foundry's 401 wording and whether it has projects; the clock offset shifts
//! the emulator's whole "now" (token times, Entra timestamps, Foundry's expiry check).

mod arm;
mod config;
mod control;
mod directory;
mod entra;
mod foundry;
mod graph;
mod graph_keys;
pub mod identities;
mod records;
pub mod resources;
mod server;
mod state;
mod util;

#[cfg(test)]
mod layering_tests;

pub use config::{
    AppSpec, DeploymentKind, DeploymentSpec, EmulatorConfig, EmulatorConfigError,
    FederatedCredentialSpec, ImdsFault, ManagedIdentitySpec, ResourceKind, load_config,
};
pub use directory::{DirectoryCounts, RoleAssignmentView};
pub use entra::jwt::{AccessTokenClaims, KEY_THUMBPRINT};
pub use records::{InferenceRecord, TokenRequestRecord};
pub use resources::{ResourceFault, ResourceFaultKind, ResourceSpec};
pub use server::{RunningEmulator, spawn, spawn_on, spawn_on_with};
pub use state::{Emulator, EntraFault};
