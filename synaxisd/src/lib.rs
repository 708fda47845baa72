//! `synaxisd`, the Synaxis daemon: an OpenAI-compatible inference gateway with a control API.
//! `docs/architecture.md` describes the modules and the path of a request through them.

pub mod app;
pub mod audit;
pub mod billing;
pub mod clock;
pub mod compliance;
pub mod config;
pub mod control;
pub mod directory;
pub mod events;
pub mod gateway;
pub mod geo;
pub mod http_error;
pub mod limits;
pub mod metrics;
pub mod region;
pub mod secrets;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tenancy;
pub mod tls;
