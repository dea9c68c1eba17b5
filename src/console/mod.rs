//! `onboard console`: the operators' web console (DESIGN.md, "Operating it"), server-rendered,
//! its own process against the worker's database and broker.
//!
//! This first part holds what every page stands on: users with roles (`viewer`, `operator`;
//! [`cli`]), a login with server-side sessions in PostgreSQL and a limit on failed tries,
//! CSRF tokens on every changing form, strict security headers ([`auth`]), and the pages for
//! the overview and the dead letters, whose actions call the very functions the CLI calls
//! (`ops::dlq`) (`pages`), and the sagas, webhooks and audit pages, whose actions are
//! `ops::actions`' (`operate`). Templates are askama's (compiled in, every value escaped);
//! nothing loads from elsewhere.

pub mod auth;
pub mod cli;
mod clients;
mod figures;
mod operate;
mod pages;
mod server;
mod state;

pub use server::{router, run};
pub use state::Console;
