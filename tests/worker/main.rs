//! Integration tests on a real RabbitMQ and a real PostgreSQL (start them with
//! `scripts/services.sh up`). One binary, one module per capability.

mod alerts;
mod arrange;
mod browser;
mod client_create;
mod console;
mod contract;
mod core;
mod delivery;
mod fencing;
mod health;
mod hostile;
mod imports;
mod instances;
mod lifecycle;
mod load;
mod ops;
mod profile;
mod queries;
mod relations;
mod saga;
mod seeds;
#[path = "../common/smtp_sink.rs"]
mod smtp_sink;
mod support;
mod traces;
mod webhooks;
mod xendit;
