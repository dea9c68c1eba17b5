//! Tools for the people around the worker: publishing commands by hand (and watching what
//! they cause).

pub mod publish;
