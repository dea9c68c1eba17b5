//! `client.import {source, source_id, direct_partner?}`: a client from a record held by
//! another system (DESIGN.md, "Relations, imports and webhooks"; the "migration" workflow).
//!
//! The record is read before the batch's transaction (`worker::batch` calls [`prepare`]),
//! never inside it, and what was read rides on the command to this handler. The handler then
//! runs the very `client.create` of the batch ([`client_create::decide`]) on the mapped body,
//! with `external_id = <source>:<source_id>`, so an import is refused, created and onboarded
//! exactly as a create is (the same saga follows), and a repeated import is
//! `EXTERNAL_ID_IN_USE`. A created client is also announced as `client.connection_created`.

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::client_create::{self, FAILED};
use super::{Cx, Decision, HandlerError, Outcome, with};
use crate::messages::event::{OutgoingKind, derived_id};
use crate::messages::{Command, OutgoingMessage, Refusal};
use crate::sources::{SourceError, Sources, map_record};
use crate::store::inbox::InboxOutcome;

pub const CONNECTION_CREATED: &str = "client.connection_created";

/// Where the read's result rides on the command: a key the schema does not allow, so only the
/// worker sets it.
const PREPARED: &str = "_prepared";

fn source_of(body: &Value) -> (&str, &str) {
    let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
    (text("source"), text("source_id"))
}

/// Reads the record of an import command (outside any transaction) and puts what came of it
/// on the command for [`decide`].
pub async fn prepare(sources: &Sources, cmd: &mut Command) {
    let (source, source_id) = source_of(&cmd.body);
    let prepared = match sources.fetch(source, source_id).await {
        Ok(record) => json!({ "record": map_record(&record) }),
        Err(SourceError::NotConfigured) => json!({ "refusal": "SOURCE_NOT_CONFIGURED" }),
        Err(SourceError::NotFound) => json!({ "refusal": "SOURCE_RECORD_NOT_FOUND" }),
        Err(SourceError::Unavailable(reason)) => json!({ "unavailable": reason }),
    };
    cmd.body[PREPARED] = prepared;
}

pub fn decide<'x>(
    cx: &'x mut Cx<'_>,
    cmds: &'x [&'x Command],
) -> BoxFuture<'x, Result<Vec<Decision>, HandlerError>> {
    Box::pin(decide_batch(cx, cmds))
}

async fn decide_batch(cx: &mut Cx<'_>, cmds: &[&Command]) -> Result<Vec<Decision>, HandlerError> {
    let mut decisions: Vec<Option<Decision>> = cmds.iter().map(|_| None).collect();
    let mut creates = Vec::new();
    let mut positions = Vec::new();
    for (i, cmd) in cmds.iter().enumerate() {
        let prepared = cmd.body.get(PREPARED).cloned().unwrap_or(Value::Null);
        let refusal = match prepared.get("refusal").and_then(Value::as_str) {
            Some("SOURCE_NOT_CONFIGURED") => Some(Refusal::source_not_configured()),
            Some(_) => Some(Refusal::source_record_not_found()),
            None => None,
        };
        let (source, source_id) = source_of(&cmd.body);
        let facts = json!({ "source": source, "source_id": source_id });
        if let Some(refusal) = refusal {
            decisions[i] = Some(Decision::Done(Outcome::refused_with(
                cmd, FAILED, refusal, facts,
            )));
        } else if let Some(reason) = prepared.get("unavailable").and_then(Value::as_str) {
            decisions[i] = Some(Decision::RetryLater(reason.to_string()));
        } else if let Some(record) = prepared.get("record") {
            let mut body = record.clone();
            body["external_id"] = Value::String(format!("{source}:{source_id}"));
            if let Some(partner) = cmd.body.get("direct_partner").filter(|p| !p.is_null()) {
                body["direct_partner"] = partner.clone();
            }
            creates.push(Command {
                meta: cmd.meta.clone(),
                body,
            });
            positions.push(i);
        } else {
            decisions[i] = Some(Decision::Failed(
                "client.import reached its handler without its source record".into(),
            ));
        }
    }
    if !creates.is_empty() {
        let refs: Vec<&Command> = creates.iter().collect();
        let created = client_create::decide(cx, &refs).await?;
        for ((i, create), decision) in positions.into_iter().zip(&creates).zip(created) {
            decisions[i] = Some(announce_connection(cmds[i], create, decision));
        }
    }
    Ok(decisions
        .into_iter()
        .map(|d| d.expect("every import is decided"))
        .collect())
}

/// A created client is also a connection to its source: `client.connection_created`.
fn announce_connection(cmd: &Command, create: &Command, decision: Decision) -> Decision {
    let Decision::Done(mut outcome) = decision else {
        return decision;
    };
    let client = outcome
        .sagas
        .first()
        .and_then(|s| s.snapshot.as_ref())
        .map(|(client, _)| client.clone());
    let (source, source_id) = source_of(&cmd.body);
    match (outcome.inbox, client) {
        (InboxOutcome::Succeeded, Some(client)) => {
            outcome.messages.push(OutgoingMessage::event(
                &cmd.meta,
                CONNECTION_CREATED,
                json!({
                    "client": client,
                    "connect": { "connection": {
                        "id": derived_id(&cmd.meta.message_id, "connection"),
                        "service_provider": source,
                    }},
                    "source": source,
                    "source_id": source_id,
                }),
            ));
        }
        _ => {
            // A refusal of the create: its event says which record it came from.
            for message in &mut outcome.messages {
                if message.kind == OutgoingKind::Event {
                    let data = message.payload["data"].take();
                    message.payload["data"] = with(
                        data,
                        json!({ "source": source, "source_id": source_id,
                                "external_id": create.body["external_id"] }),
                    );
                }
            }
        }
    }
    Decision::Done(outcome)
}
