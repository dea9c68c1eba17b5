//! The outbox: what transactions decided to say, published after their commit, by the
//! worker that committed them ([`dispatch`]) or, when that did not happen, by a relay
//! ([`relay`]).

pub mod dispatch;
pub mod relay;
pub mod wake;

pub use dispatch::Dispatcher;
pub use wake::Wake;
