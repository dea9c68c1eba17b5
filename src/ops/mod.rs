//! Tools for the people around the worker: publishing commands by hand (and watching what
//! they cause), the dead-letter queue (list, group, show, replay, purge), loading the worker
//! at volume to measure it, the bare ceiling it is measured against, and stuck sagas.

pub mod actions;
pub mod ceiling;
pub mod dlq;
pub mod import;
pub mod load;
pub mod load_cli;
pub mod plot;
pub mod publish;
pub mod saga;
pub mod traces;
