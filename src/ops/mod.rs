//! Tools for the people around the worker: publishing commands by hand (and watching what
//! they cause), and loading the worker at volume to measure it.

pub mod load;
pub mod publish;
