//! Credentials: where the proxy's access token comes from.
//!
//! Every kind of credential implements [`Credential`]; the token refresher only sees the
//! trait. [`entra`] is the Entra ID token-endpoint client and its error types.

pub mod client_secret;
pub mod entra;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::secret::Secret;

pub use client_secret::ClientSecretCredential;
pub use entra::{CredentialError, EntraError};

/// An access token and how long Entra said it lives.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The bearer token.
    pub token: Secret,
    /// Lifetime from the moment of issue (`expires_in`).
    pub expires_in: Duration,
}

/// A boxed future, so credentials can be used as trait objects.
pub type TokenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<AccessToken, CredentialError>> + Send + 'a>>;

/// A source of access tokens for one scope.
pub trait Credential: Send + Sync + std::fmt::Debug {
    /// Acquires a fresh token (never cached here: the refresher owns caching).
    fn get_token(&self) -> TokenFuture<'_>;

    /// A short name of the credential kind, for logs and `/readyz`.
    fn kind(&self) -> &'static str;
}
