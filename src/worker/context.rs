//! What every batch and task of a worker shares.

use std::sync::Arc;

use sqlx::PgPool;
use uuid::Uuid;

use crate::broker::{Names, Publisher};
use crate::configuration::Settings;
use crate::key::DeploymentKey;
use crate::messages::Schemas;
use crate::metrics::Metrics;
use crate::observe::Hooks;
use crate::outbox;
use crate::saga::Runner;

/// What every batch and task of the worker shares.
pub struct Context {
    pub settings: Arc<Settings>,
    pub pool: PgPool,
    /// Queries' and rejections' own connections (`database.query_connections`).
    pub query_pool: PgPool,
    pub names: Names,
    pub schemas: Schemas,
    /// Publishes retries, dead letters and query answers (the relay has its own channel).
    pub publisher: Publisher,
    /// Publishes what a committed transaction wrote to the outbox.
    pub outbox: Arc<outbox::Dispatcher>,
    /// Runs the sagas a batch started, once it committed (in the slots it reserved).
    pub runner: Runner,
    /// This worker, as saga leases name it.
    pub worker_id: Uuid,
    pub hooks: Hooks,
    /// Counters and histograms served on `/metrics`.
    pub metrics: Metrics,
    /// Signs and checks the attempt count of retry copies; derives first-access secrets.
    pub key: DeploymentKey,
    /// The systems `client.import` reads records from.
    pub sources: crate::sources::Sources,
}
