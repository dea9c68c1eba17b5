//! `client.import {source, source_id, direct_partner?}`: a client from a record held by
//! another system (DESIGN.md, "Relations, imports and webhooks"; the "migration" workflow).
//!
//! The record is read before the batch's transaction (`worker::batch` calls [`prepare`]),
//! never inside it, and what was read rides on the command to this handler. The handler then
//! runs the very `client.create` of the batch ([`client_create::decide`]) on the mapped body,
//! with `external_id = <source>:<source_id>`, so an import is refused, created and onboarded
//! exactly as a create is (the same saga follows), and a repeated import is
//! `EXTERNAL_ID_IN_USE`. A created client is also announced as `client.connection_created`.

use serde::Deserialize;
use serde_json::{Value, json};

use super::body::PartnerGiven;
use super::client_create::{ClientCreate, FAILED};
use super::handler::{Cmd, Command, Cx, DecideMany, Decision, HandlerError, Outcome, with};
use crate::messages::event::{OutgoingKind, derived_id};
use crate::messages::{CommandType, OutgoingMessage, Refusal};
use crate::sources::{SourceError, Sources, map_record};
use crate::store::inbox::InboxOutcome;

pub const CONNECTION_CREATED: &str = "client.connection_created";

/// `client.import {source, source_id, direct_partner?}`.
#[derive(Debug, Deserialize)]
pub struct ClientImport {
    pub source: String,
    pub source_id: String,
    #[serde(default)]
    pub direct_partner: Option<PartnerGiven>,
    /// What reading the record came to: set by the worker before the batch (never by a
    /// sender: it is not part of the body).
    #[serde(skip)]
    pub prepared: Option<Prepared>,
}

/// What reading an import's source record came to.
#[derive(Debug, Clone)]
pub enum Prepared {
    /// The record, mapped onto a `client.create` body.
    Record(Value),
    NotConfigured,
    NotFound,
    /// The source did not answer as it should: try again later.
    Unavailable(String),
}

impl Command for ClientImport {
    const TYPE: CommandType = CommandType::new("client.import");
    const SCHEMA: &'static str = crate::schema!("client.import");
    const REFUSAL_EVENT: &'static str = FAILED;
}

/// Reads the record of an import (outside any transaction) and keeps what came of it on the
/// command, for [`ClientImport::decide`].
pub async fn prepare(sources: &Sources, import: &mut ClientImport) {
    import.prepared = Some(
        match sources.fetch(&import.source, &import.source_id).await {
            Ok(record) => Prepared::Record(map_record(&record)),
            Err(SourceError::NotConfigured) => Prepared::NotConfigured,
            Err(SourceError::NotFound) => Prepared::NotFound,
            Err(SourceError::Unavailable(reason)) => Prepared::Unavailable(reason),
        },
    );
}

impl DecideMany for ClientImport {
    async fn decide(
        cx: &mut Cx<'_>,
        cmds: &[Cmd<'_, Self>],
    ) -> Result<Vec<Decision>, HandlerError> {
        decide_batch(cx, cmds).await
    }
}

async fn decide_batch(
    cx: &mut Cx<'_>,
    cmds: &[Cmd<'_, ClientImport>],
) -> Result<Vec<Decision>, HandlerError> {
    let mut decisions: Vec<Option<Decision>> = cmds.iter().map(|_| None).collect();
    let mut creates: Vec<ClientCreate> = Vec::new();
    let mut positions = Vec::new();
    for (i, cmd) in cmds.iter().enumerate() {
        let import = cmd.body;
        let facts = json!({ "source": import.source, "source_id": import.source_id });
        let refused = |refusal| {
            Some(Decision::Done(Outcome::refused_with(
                cmd.meta,
                FAILED,
                refusal,
                facts.clone(),
            )))
        };
        match &import.prepared {
            Some(Prepared::NotConfigured) => {
                decisions[i] = refused(Refusal::source_not_configured());
            }
            Some(Prepared::NotFound) => {
                decisions[i] = refused(Refusal::source_record_not_found());
            }
            Some(Prepared::Unavailable(reason)) => {
                decisions[i] = Some(Decision::RetryLater(reason.clone()));
            }
            Some(Prepared::Record(record)) => {
                match serde_json::from_value::<ClientCreate>(record.clone()) {
                    Ok(mut create) => {
                        create.external_id =
                            Some(format!("{}:{}", import.source, import.source_id));
                        if let Some(partner) = &import.direct_partner {
                            create.direct_partner = Some(partner.clone());
                        }
                        creates.push(create);
                        positions.push(i);
                    }
                    Err(e) => {
                        decisions[i] = Some(Decision::Failed(format!(
                            "the source record maps to no client.create body ({:?} error)",
                            e.classify()
                        )));
                    }
                }
            }
            None => {
                decisions[i] = Some(Decision::Failed(
                    "client.import reached its handler without its source record".into(),
                ));
            }
        }
    }
    if !creates.is_empty() {
        let refs: Vec<Cmd<'_, ClientCreate>> = positions
            .iter()
            .zip(&creates)
            .map(|(&i, body)| Cmd {
                meta: cmds[i].meta,
                body,
            })
            .collect();
        let created = <ClientCreate as DecideMany>::decide(cx, &refs).await?;
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
fn announce_connection(
    cmd: Cmd<'_, ClientImport>,
    create: &ClientCreate,
    decision: Decision,
) -> Decision {
    let Decision::Done(mut outcome) = decision else {
        return decision;
    };
    let client = outcome
        .sagas
        .first()
        .and_then(|s| s.snapshot.as_ref())
        .map(|(client, _)| client.clone());
    let (source, source_id) = (&cmd.body.source, &cmd.body.source_id);
    match (outcome.inbox, client) {
        (InboxOutcome::Succeeded, Some(client)) => {
            outcome.messages.push(OutgoingMessage::event(
                cmd.meta,
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
                    let payload = message.payload.tree_mut();
                    let data = payload["data"].take();
                    payload["data"] = with(
                        data,
                        json!({ "source": source, "source_id": source_id,
                                "external_id": create.external_id }),
                    );
                }
            }
        }
    }
    Decision::Done(outcome)
}
