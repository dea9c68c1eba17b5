//! A saga this worker is running now: what the saga row says, plus what the worker still has
//! in memory from the step before (the client and admin rows, the admin's first-access
//! secret), so the next step does not read or write them again.

use std::sync::Arc;

use serde_json::Value;
use uuid::Uuid;

use crate::domain::saga::Step;
use crate::domain::{AdminUser, Client};
use crate::email::FirstAccess;
use crate::messages::{CommandMeta, CommandType};
use crate::store::sagas::{Lease, Saga};

use super::env::Slot;

/// The command that starts every saga (`client.create`'s handler takes its type from here).
pub const ORIGIN_TYPE: CommandType = CommandType::new("client.create");

#[derive(Debug, Clone)]
pub struct SagaJob {
    pub saga_id: Uuid,
    /// The step to run now.
    pub step: Step,
    /// Failed attempts of this step so far.
    pub attempts: i32,
    /// The `client.create` that started the saga: its ids, `reply_to` and trace, which every
    /// event and the final reply refer to.
    pub origin: CommandMeta,
    pub client_id: i32,
    pub admin_user_id: i32,
    /// The client and admin as the previous step left them (`None`: read them).
    pub snapshot: Option<(Client, AdminUser)>,
    /// What earlier steps learnt (`onboarding_sagas.data`).
    pub data: Value,
    /// The admin's first-access secret, made and stored (as a hash) by an earlier
    /// transaction; `None`: the email step makes one and stores it before sending.
    pub access: Option<FirstAccess>,
    /// The epoch of the lease this worker holds the saga under: every write of its step
    /// names it.
    pub epoch: i64,
    /// Whether the welcome email's send is claimed under this lease already (done with the
    /// start or the move to the email step, when this worker had room to send at once).
    pub send_claimed: bool,
    /// The slot its first step runs in, reserved by the `client.create` batch that started
    /// it; the runner's `start` takes it.
    pub slot: Option<Arc<Slot>>,
    /// The step's span in the command's trace (disabled unless traces are exported): the
    /// outside calls made for this saga run inside it.
    pub span: tracing::Span,
}

impl SagaJob {
    /// Opens this saga's span for `step`, a child of the command that started the saga (the
    /// previous step's span ends as it is replaced).
    pub fn enter_step(&mut self, step: Step) {
        self.span = crate::export_span!(
            parent: None,
            "saga",
            otel.name = %format!("saga {}", step.as_str()),
            saga_id = %self.saga_id,
            client_id = self.client_id,
            step = step.as_str(),
        );
        crate::telemetry::set_parent(&self.span, self.origin.traceparent.as_deref());
    }

    /// The lease this worker holds it under.
    pub fn lease(&self) -> Lease {
        Lease {
            saga_id: self.saga_id,
            epoch: self.epoch,
        }
    }

    /// A saga taken from the database (by the sweeper), under the epoch of that claim.
    pub fn from_row(saga: Saga) -> SagaJob {
        SagaJob {
            saga_id: saga.saga_id,
            step: saga.step,
            attempts: saga.attempts,
            origin: CommandMeta {
                command_type: ORIGIN_TYPE,
                message_id: saga.message_id,
                correlation_id: saga.correlation_id,
                reply_to: saga.reply_to,
                traceparent: saga.traceparent,
                attempt: 0,
            },
            client_id: saga.client_id,
            admin_user_id: saga.admin_user_id,
            snapshot: None,
            data: saga.data,
            access: None,
            epoch: saga.lease_epoch,
            send_claimed: false,
            slot: None,
            span: tracing::Span::none(),
        }
    }
}
