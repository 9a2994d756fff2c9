//! The inference side of the emulator: Azure AI Foundry's surfaces (`/openai/v1`,
//! `/openai/deployments`, `/models`, `/v1` passthrough, Claude's `/anthropic/v1`, and a project's
//! `/api/projects/{project}/openai/v1`) and the answers they generate.
//!
//! Checks, in the order a request meets them:
//! - `handler`: the one handler for every inference path; it runs the checks below in Azure's
//!   order and hands the request to a generator
//! - `route`: which surface and op a path names, and the api-version rules
//! - `auth`: the bearer token (its audience per surface), its tenant and the caller's
//!   data-plane role (the project's data action on project endpoints)
//! - `fault`: `x-emulator-fault`, one refusal played at the stage where Azure would refuse
//! - `error`: Foundry's refusal bodies; `body`: reading JSON and multipart request bodies
//!
//! Generated answers:
//! - `anthropic`: Claude's Messages API (`/anthropic/v1/messages`, `count_tokens`), Anthropic's
//!   wire format, with `tool_use` from the shared answer rules
//! - `chat`, `responses`, `embeddings`, `media`: one module per family of ops (`media` also
//!   serves the generated images at `/_emulator/images/{id}.png`)
//! - `text`: the deterministic content and its token accounting; `sse`: streamed bodies
//! - `schema_value`: a value valid against a JSON Schema (structured outputs, tool arguments)
//! - `model`: the answer rules (text, JSON, tool calls) shared by Chat and Responses
//! - `websocket`: WebSocket upgrades (the handshake's checks, the session loop, the connection
//!   time limit); `realtime`: the realtime API's text modality; the Responses WebSocket mode
//!   sends the `responses` events

mod anthropic;
pub(super) mod auth;
mod body;
mod chat;
mod embeddings;
pub(super) mod error;
mod fault;
pub(super) mod handler;
pub(super) mod media;
mod model;
mod realtime;
mod responses;
mod route;
mod schema_value;
mod sse;
mod text;
mod websocket;
