//! Tools for the people around the worker: publishing commands by hand (and watching what
//! they cause), and the dead-letter queue (list, group, show, replay, purge).

pub mod dlq;
pub mod publish;
