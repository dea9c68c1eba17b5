//! RabbitMQ: connecting (with lapin's automatic recovery), the topology, one publisher with
//! confirms, and turning deliveries into plain [`crate::messages::IncomingMessage`]s.

pub mod ack;
mod connect;
pub mod headers;
pub mod link;
pub mod publisher;
pub mod topology;

pub use ack::{AckWindow, Delivery, ack, ack_all, requeue};
pub use connect::{accepts, connect, connect_node, node_address};
pub use link::Link;
pub use publisher::{Delivered, PublishError, Publisher};
pub use topology::{Names, declare_on};
