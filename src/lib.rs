//! `onboard`: onboards business clients of a payments platform from RabbitMQ commands.
//!
//! (Layout section is written with the spine; see README.)

pub mod domain;
pub mod email;
pub mod xendit;
