//! How much one dead-letter run holds, and how long it waits for more.

use std::time::Duration;

/// Default and largest snapshot: what one run holds unacked at most.
pub const DEFAULT_LIMIT: usize = 10_000;
pub const MAX_LIMIT: usize = u16::MAX as usize;

/// How long the snapshot waits for the next message before taking what it has.
pub(super) const IDLE: Duration = Duration::from_secs(2);
