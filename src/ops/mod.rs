//! Tools for the people around the worker: publishing commands by hand (and watching what
//! they cause), loading the worker at volume to measure it, and the bare ceiling it is measured against.

pub mod ceiling;
pub mod load;
pub mod publish;
