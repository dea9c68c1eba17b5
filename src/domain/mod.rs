//! Business rules as plain functions over plain data: no broker, no database. Handlers call
//! these and keep I/O at the edges.

pub mod client;
pub mod client_code;
pub mod country;
pub mod instance;
pub mod lifecycle;
pub mod new_client;
pub mod paging;
pub mod phone;
pub mod profile;
pub mod psp;
pub mod refusal;
pub mod relation;
pub mod saga;

pub use client::{AdminUser, Client, ClientListItem, CreatedBody};
pub use client_code::client_code;
pub use lifecycle::{
    ApprovalPolicy, ClientStatus, EkycStatus, InvalidTransition, LifecycleAction, ParseStatusError,
    decide, transition,
};
pub use new_client::{Email, NewClient};
pub use psp::{PspCandidate, choose_psp};
pub use refusal::Refusal;
