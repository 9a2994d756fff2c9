//! The identity side of the emulator: Entra ID's v2.0 token endpoint and the managed identity
//! endpoints, with everything they need to check a credential and sign a token.
//!
//! - `token`: `POST /{tenant}/oauth2/v2.0/token`, the client-credentials grant
//! - `error`, `aadsts`: Entra's error answer and every AADSTS message the emulator gives
//! - `assertion`: client assertions (certificate and federated) at the token endpoint
//! - `certificate`, `digest`: registered client certificates and their thumbprints
//! - `jwt`: access-token claims, RS256 signing and verification with the emulator's key
//!   (`emulator_signing_*.pem`)
//! - `msi`: the managed identity endpoints (IMDS and App Service / Container Apps)
//!
//! The Foundry side verifies these tokens through [`jwt::AccessTokenClaims`]; nothing here
//! knows about inference.

pub(super) mod aadsts;
mod assertion;
pub(super) mod certificate;
mod digest;
mod error;
pub(super) mod jwt;
pub(super) mod msi;
pub(super) mod token;
