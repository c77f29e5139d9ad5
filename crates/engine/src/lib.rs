//! The engine: the component model, the pipeline graph built from config, bounded queues with
//! backpressure, the exporter helper (queue, retry, accounting), graceful drain, and
//! self-telemetry (the `/metrics`, `/healthz`, `/readyz` admin endpoint).
//!
//! Invariants kept here: every queue is bounded; overload becomes a retryable refusal at the
//! receiver; every item is counted at the door (received = accepted + refused) and at each
//! exporter (received = sent + dropped + queued); one slow exporter stalls only its own queue.

pub mod admin;
pub mod component;
pub mod connector;
pub mod consumer;
pub mod exporter_helper;
pub mod health;
mod pipeline;
pub mod service;
pub mod telemetry;

pub use admin::{ApiHandler, ApiRequest, ApiResponse, ApiRoutes};
pub use component::*;
pub use consumer::{Consumer, Consumers};
pub use health::Health;
pub use service::{Components, DrainReport, Service};
pub use telemetry::Registry;
