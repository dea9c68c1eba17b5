//! Business rules as plain functions over plain data.

pub mod lifecycle;

pub use lifecycle::{
    ApprovalPolicy, ClientStatus, EkycStatus, InvalidTransition, LifecycleAction, ParseStatusError,
    Refusal, decide, transition,
};
