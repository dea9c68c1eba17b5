//! The outbound adapters from the outside, against fakes of the outside world: the welcome
//! email (its secrets, its text, files and a real SMTP conversation) and the Xendit client
//! (against `wiremock` and the lab's fake Xendit). No broker and no database.

mod email;
#[path = "../common/smtp_sink.rs"]
mod smtp_sink;
mod xendit;
