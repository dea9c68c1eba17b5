//! What the other message modules share and depend on, so they need not depend on each other:
//! the command type a routing key names, and the cutting of hostile text for messages.

use std::fmt;

/// A routing key the worker accepts on the commands exchange: the `TYPE` of one command or
/// query implementation (`handlers::Command`, `handlers::Query`). The registry
/// (registry.rs) is where the names meet their code; which names exist is whatever it
/// registers, and `Schemas::type_of` tells a routing key's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandType(&'static str);

impl CommandType {
    /// The type named `name` (an implementation's `TYPE`).
    pub const fn new(name: &'static str) -> CommandType {
        CommandType(name)
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for CommandType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Cuts hostile input short for messages, on a char boundary.
pub fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((idx, _)) => format!("{}…", &s[..idx]),
        None => s.to_string(),
    }
}
