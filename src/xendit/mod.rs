//! Xendit Customers API client and a local fake of it.
//!
//! The create-client saga's `xendit` step makes two customers per Indonesian client: a BUSINESS
//! customer for the client and an INDIVIDUAL customer for its admin. This module is all it needs:
//!
//! ```no_run
//! # async fn step(client: &onboard::xendit::XenditClient) -> Result<(), onboard::xendit::XenditError> {
//! use onboard::xendit::{BusinessInput, CustomerRequest, idempotency_key, reference_id};
//!
//! let reference = reference_id("onboard", "client", 42);
//! let request = CustomerRequest::business(&reference, BusinessInput {
//!     client_alias: "Tech Company Ltd".into(),
//!     client_type: "CORPORATE".into(),
//!     email: "admin@company.com".into(),
//!     phone: "+628123456789".into(),
//! });
//! match client.create_customer(&request, &idempotency_key(&reference)).await {
//!     Ok(customer) => { /* store customer.id */ }
//!     Err(error) if error.is_transient() => { /* retry later through the delay queue */ }
//!     Err(error) => { /* record error.error_code() and error.message(); move on */ }
//! }
//! # Ok(()) }
//! ```
//!
//! Layout:
//! - `client`: [`XenditClient`] and its [`XenditSettings`]; retries, duplicate recovery.
//! - `customer`: what we send ([`CustomerRequest`] and its builders) and get back ([`Customer`]).
//! - `ids`: [`reference_id`] and [`idempotency_key`], deterministic so retries never duplicate.
//! - `error`: [`XenditError`], transient or permanent.
//! - [`fake`]: a local Xendit for dev, docker-compose and tests, with switches to misbehave.

mod client;
mod customer;
mod error;
pub mod fake;
mod ids;

pub use client::{API_VERSION, DEFAULT_BASE_URL, SettingsError, XenditClient, XenditSettings};
pub use customer::{
    BusinessDetail, BusinessInput, BusinessType, Customer, CustomerRequest, CustomerType,
    IndividualDetail, IndividualInput, MAX_EMAIL_CHARS, MAX_NAME_CHARS, XENDIT_COUNTRY,
};
pub use error::{ApiError, XenditError};
pub use ids::{idempotency_key, reference_id};
