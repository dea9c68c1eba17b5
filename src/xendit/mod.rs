//! Xendit Customers API client and a local fake of it.
//!
//! Layout:
//! - `customer`: what we send ([`CustomerRequest`] and its builders) and get back ([`Customer`]).
//! - `ids`: [`reference_id`] and [`idempotency_key`], deterministic so retries never duplicate.

mod customer;
mod ids;

pub use customer::{
    BusinessDetail, BusinessInput, BusinessType, Customer, CustomerRequest, CustomerType,
    IndividualDetail, IndividualInput, MAX_NAME_CHARS, XENDIT_COUNTRY,
};
pub use ids::{idempotency_key, reference_id};
