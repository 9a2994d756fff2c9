//! One token per distinct scope: the upstreams that share a scope share its token cell, and
//! each cell has its own refresher, renewing ahead as the main one does
//! (docs/credentials.md#token-policy).

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::credential::{self, CredentialError};
use crate::token::{self, TokenCell, TokenPolicy};

/// The token cells of every scope the upstreams use besides the main one, with their
/// refreshers.
#[derive(Debug)]
pub struct ScopedTokens {
    /// Scope → cell; the main scope's cell first.
    cells: Vec<(String, Arc<TokenCell>)>,
    /// The extra refreshers, stopped by the token given to [`ScopedTokens::start`].
    pub refreshers: Vec<JoinHandle<()>>,
}

impl ScopedTokens {
    /// Starts a credential and a refresher for each scope of `config.upstreams` other than
    /// `config.scope`, whose cell is `main`.
    pub fn start(
        config: &Config,
        tls: &Arc<rustls::ClientConfig>,
        main: &Arc<TokenCell>,
        policy: &TokenPolicy,
        stop: &CancellationToken,
    ) -> Result<Self, CredentialError> {
        let mut scoped = Self {
            cells: vec![(config.scope.clone(), Arc::clone(main))],
            refreshers: Vec::new(),
        };
        for upstream in &config.upstreams.list {
            if scoped
                .cells
                .iter()
                .any(|(scope, _)| *scope == upstream.scope)
            {
                continue;
            }
            let mut for_scope = config.clone();
            for_scope.scope.clone_from(&upstream.scope);
            let credential = credential::build(&for_scope, Arc::clone(tls))?;
            let cell = TokenCell::new(policy.clone(), credential.kind());
            tracing::info!(scope = %upstream.scope, "token for a second scope");
            scoped.refreshers.push(token::spawn_refresher(
                Arc::clone(&cell),
                credential,
                stop.clone(),
            ));
            scoped.cells.push((upstream.scope.clone(), cell));
        }
        Ok(scoped)
    }

    /// The cell of `scope` (the main one when the scope is unknown).
    pub fn cell(&self, scope: &str) -> Arc<TokenCell> {
        self.cells
            .iter()
            .find(|(s, _)| s == scope)
            .or(self.cells.first())
            .map(|(_, cell)| Arc::clone(cell))
            .unwrap_or_else(|| TokenCell::new(TokenPolicy::default(), "none"))
    }
}
