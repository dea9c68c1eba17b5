//! `client.create`, saga step 1 (persist), for a whole batch at once: required fields, PSP by
//! country, email uniqueness, gap-free client codes, client and admin user rows, the sagas,
//! and `client.created`, or one of the contract's refusals with nothing changed.
//!
//! The batch costs a handful of statements however many commands it holds: one read of the
//! PSPs, one check of the emails, and one multi-row insert each for clients (which takes and
//! moves the month's code counter in the same statement), admin users and sagas. Codes are
//! taken under the counter's lock and only for the commands that will insert, so they stay
//! gap-free; if an email was taken meanwhile by a transaction that does not hold the lock,
//! the insert fails on the unique index and the batch is tried again at once
//! ([`HandlerError::Contended`]), when the check sees it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::body::PartnerGiven;
use super::handler::{
    Cmd, Command, Cx, DecideMany, Decision, HandlerError, Outcome, external_id_in_use,
};
use crate::domain::new_client::ContactFields;
use crate::domain::profile::{self, PartnerSelector};
use crate::domain::relation::{self, NewRelation};
use crate::domain::saga::Step;
use crate::domain::{CreatedBody, NewClient, PspCandidate, choose_psp};
use crate::email::{AccessMode, FirstAccess, StoredAccess};
use crate::messages::event::derived_id;
use crate::messages::{CommandMeta, CommandType, OutgoingMessage, Refusal};
use crate::saga::{SagaJob, Slot};
use crate::store::{self, clients::ClientRow, partners::Resolved, sagas::NewSaga};

pub const CREATED: &str = "client.created";
pub const FAILED: &str = "client.creation_failed";

/// `client.create`: the seed's five fields (each may be missing: the seed's own refusal says
/// so) and the client profile (DESIGN.md, "The client profile").
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClientCreate {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub client_alias: Option<String>,
    #[serde(default)]
    pub client_type: Option<String>,
    #[serde(default)]
    pub country_code: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    /// PENDING or nothing (the schema's rule): every other state is the lifecycle's.
    #[serde(default)]
    pub client_status: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    /// Free keys (the contract's limits are checked by `domain::profile`).
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    /// Corporate or individual (normalised by `domain::profile`).
    #[serde(default)]
    pub identity: Option<Value>,
    #[serde(default)]
    pub address: Option<Value>,
    #[serde(default)]
    pub direct_partner: Option<PartnerGiven>,
    /// Related people (normalised by `domain::relation`).
    #[serde(default)]
    pub relations: Option<Vec<Value>>,
    /// Seed 002's `isActive`: true when absent.
    #[serde(default)]
    pub is_active: Option<bool>,
    /// Seed 002's contact person `{name, email, phone}`.
    #[serde(default)]
    pub contact: Option<Value>,
    /// Seed 003's free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Seed 004's `corporationType`; the same as `identity.corporation_type`.
    #[serde(default)]
    pub corporation_type: Option<String>,
}

impl Command for ClientCreate {
    /// `client.create`: the command that starts a saga.
    const TYPE: CommandType = crate::saga::ORIGIN_TYPE;
    const SCHEMA: &'static str = crate::schema!("client.create");
    const REFUSAL_EVENT: &'static str = FAILED;
}

impl DecideMany for ClientCreate {
    async fn decide(
        cx: &mut Cx<'_>,
        cmds: &[Cmd<'_, Self>],
    ) -> Result<Vec<Decision>, HandlerError> {
        decide_batch(cx, cmds).await
    }
}

/// A command that passed every check so far, on its way to becoming a client.
struct Accepted<'a> {
    index: usize,
    meta: &'a CommandMeta,
    new: NewClient,
    profile: Profile,
    psp: PspCandidate,
}

/// The profile a `client.create` gives, normalised (DESIGN.md, "The client profile").
#[derive(Debug)]
struct Profile {
    external_id: Option<String>,
    metadata: Option<Value>,
    identity: Value,
    address: Option<Value>,
    direct_partner: Option<PartnerSelector>,
    /// The partner once resolved (direct and root).
    resolved: Option<Resolved>,
    /// Related people (corporate clients only, at most 10).
    relations: Vec<NewRelation>,
    is_active: bool,
    description: Option<String>,
    contact: Option<Value>,
}

impl Profile {
    fn parse(body: &ClientCreate, new: &NewClient) -> Result<Profile, Refusal> {
        let metadata = match &body.metadata {
            Some(m) => {
                profile::check_metadata(m)?;
                Some(Value::Object(m.clone()))
            }
            None => None,
        };
        let identity = match super::body::text(body.corporation_type.as_deref()) {
            None => profile::normalize_identity(body.identity.as_ref(), &new.client_alias)?,
            // The top-level field is the identity's, for senders that keep it beside the rest.
            Some(kind) => {
                let mut given = body.identity.clone().filter(Value::is_object);
                let given = given.get_or_insert_with(|| json!({"type": "corporate"}));
                if given.get("type").and_then(Value::as_str) == Some("individual") {
                    return Err(Refusal::corporation_type_not_corporate());
                }
                if given.get("corporation_type").is_none_or(Value::is_null) {
                    given["corporation_type"] = Value::String(kind);
                }
                profile::normalize_identity(Some(given), &new.client_alias)?
            }
        };
        let relations = relation::parse_all(None, body.relations.as_deref())?;
        if !relations.is_empty() && !relation::is_corporate(Some(&identity)) {
            return Err(Refusal::relations_corporate_only());
        }
        Ok(Profile {
            external_id: super::body::text(body.external_id.as_deref()),
            metadata,
            identity,
            address: match &body.address {
                Some(a) => profile::normalize_address(a)?,
                None => None,
            },
            direct_partner: body
                .direct_partner
                .as_ref()
                .and_then(PartnerGiven::selector),
            resolved: None,
            relations,
            is_active: body.is_active.unwrap_or(true),
            description: super::body::text(body.description.as_deref()),
            contact: profile::normalize_contact(body.contact.as_ref())?,
        })
    }
}

impl ClientCreate {
    fn contact(&self) -> ContactFields<'_> {
        ContactFields {
            email: self.email.as_deref(),
            client_alias: self.client_alias.as_deref(),
            client_type: self.client_type.as_deref(),
            country_code: self.country_code.as_deref(),
            phone: self.phone.as_deref(),
        }
    }
}

async fn decide_batch(
    cx: &mut Cx<'_>,
    cmds: &[Cmd<'_, ClientCreate>],
) -> Result<Vec<Decision>, HandlerError> {
    let mut decisions: Vec<Option<Decision>> = cmds.iter().map(|_| None).collect();
    let refuse = |decisions: &mut Vec<Option<Decision>>, i: usize, refusal: Refusal| {
        decisions[i] = Some(Decision::Done(Outcome::refused(
            cmds[i].meta,
            FAILED,
            refusal,
        )));
    };

    // The five fields, their widths, the profile, and the PSP of the country.
    let mut parsed = Vec::with_capacity(cmds.len());
    for (i, cmd) in cmds.iter().enumerate() {
        match NewClient::parse(cmd.body.contact())
            .and_then(|new| Profile::parse(cmd.body, &new).map(|p| (new, p)))
        {
            Ok((new, profile)) => parsed.push((i, new, profile)),
            Err(refusal) => refuse(&mut decisions, i, refusal),
        }
    }
    let countries: Vec<&str> = {
        let set: HashSet<&str> = parsed
            .iter()
            .map(|(_, n, _)| n.country_code.as_str())
            .collect();
        set.into_iter().collect()
    };
    let mut psps: HashMap<String, Vec<PspCandidate>> = HashMap::new();
    if !countries.is_empty() {
        for (country, psp) in store::clients::psp_candidates(cx.conn, &countries).await? {
            psps.entry(country).or_default().push(psp);
        }
    }
    let mut accepted = Vec::with_capacity(parsed.len());
    for (i, new, profile) in parsed {
        let candidates = psps
            .get(&new.country_code)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        match choose_psp(candidates) {
            Ok(psp) => accepted.push(Accepted {
                index: i,
                meta: cmds[i].meta,
                psp: psp.clone(),
                new,
                profile,
            }),
            Err(refusal) => refuse(&mut decisions, i, refusal),
        }
    }

    // The partners named, in one query.
    let selectors: Vec<&PartnerSelector> = accepted
        .iter()
        .filter_map(|a| a.profile.direct_partner.as_ref())
        .collect();
    let mut resolved = store::partners::resolve(cx.conn, &selectors)
        .await?
        .into_iter();
    let mut with_partner = Vec::with_capacity(accepted.len());
    for mut a in accepted {
        if a.profile.direct_partner.is_some() {
            match resolved.next().expect("one resolution per selector") {
                Some(r) => a.profile.resolved = Some(r),
                None => {
                    refuse(&mut decisions, a.index, Refusal::partner_not_found());
                    continue;
                }
            }
        }
        with_partner.push(a);
    }
    let accepted = with_partner;

    if !accepted.is_empty() {
        let emails: Vec<&str> = accepted.iter().map(|a| a.new.email.as_str()).collect();
        let taken = store::clients::emails_taken(cx.conn, &emails).await?;
        let external: Vec<&str> = accepted
            .iter()
            .filter_map(|a| a.profile.external_id.as_deref())
            .collect();
        let mut holders = store::clients::external_ids_taken(cx.conn, &external)
            .await?
            .into_iter();
        let mut seen = HashSet::new();
        let mut seen_external: HashMap<&str, usize> = HashMap::new();
        let mut insert = Vec::with_capacity(accepted.len());
        // Commands refused because an earlier command of this batch takes their external id:
        // answered once that client exists, with its id and code.
        let mut behind: Vec<(usize, &str)> = Vec::new();
        for (a, (folded, is_taken)) in accepted.iter().zip(taken) {
            let holder = match a.profile.external_id.as_deref() {
                Some(_) => holders.next().expect("one answer per external id"),
                None => None,
            };
            // The external id first: a record created before (an import repeated, say) is
            // that, whatever else matches.
            if let Some((client_id, client_code)) = holder {
                decisions[a.index] = Some(Decision::Done(external_id_in_use(
                    a.meta,
                    FAILED,
                    client_id,
                    &client_code,
                    Value::Null,
                )));
                continue;
            }
            // Taken before, or by an earlier command of this very batch.
            if is_taken || seen.contains(&folded) {
                refuse(&mut decisions, a.index, Refusal::email_in_use());
                continue;
            }
            if let Some(e) = a.profile.external_id.as_deref()
                && seen_external.insert(e, a.index).is_some()
            {
                behind.push((a.index, e));
                continue;
            }
            seen.insert(folded);
            insert.push(a);
        }
        if !insert.is_empty() {
            // From the client insert to commit this batch is the only one inserting clients
            // this month (the insert takes the month's code counter). The checks above are
            // made before it, so that the lock is held for the inserts only (the other batch
            // slot waits for it): an email or external id another batch takes meanwhile makes
            // an insert come short, the batch is contended and runs again, and the unique
            // indexes decide.
            let access = first_access(cx, &insert);
            let created = persist(cx, &insert, access, &mut decisions).await?;
            for (index, external) in behind {
                let (client_id, client_code) = &created[external];
                decisions[index] = Some(Decision::Done(external_id_in_use(
                    cmds[index].meta,
                    FAILED,
                    *client_id,
                    client_code,
                    Value::Null,
                )));
            }
        }
    }
    Ok(decisions
        .into_iter()
        .map(|d| d.expect("every command of the batch is decided"))
        .collect())
}

/// Each new admin's first access, made before the month's code counter is taken (nothing in
/// it needs the counter, and the other batch slot waits while the counter is held). The
/// welcome email's activation link is made now, so its hash goes in with the admin row and the
/// email step has nothing to write before sending; the token itself stays in this worker's
/// memory, for the email step. (A temporary password costs an argon2 hash: the email step
/// makes it, off the async threads.) Derived from the saga's id, so a worker that takes the
/// saga over makes the same one.
fn first_access(cx: &Cx<'_>, insert: &[&Accepted<'_>]) -> Vec<Option<(FirstAccess, StoredAccess)>> {
    match cx.settings.email.access {
        AccessMode::ActivationLink => insert
            .iter()
            .map(|a| {
                let saga_id = derived_id(&a.meta.message_id, "saga");
                FirstAccess::issue_for_saga(&cx.settings.email, Utc::now(), cx.key, saga_id).ok()
            })
            .collect(),
        AccessMode::TemporaryPassword => insert.iter().map(|_| None).collect(),
    }
}

/// Inserts the clients, their admins and their sagas, and decides their outcomes; returns the
/// id and code of each client created with an external id, by that id.
async fn persist<'a>(
    cx: &mut Cx<'_>,
    insert: &[&'a Accepted<'a>],
    access: Vec<Option<(FirstAccess, StoredAccess)>>,
    decisions: &mut [Option<Decision>],
) -> Result<HashMap<&'a str, (i32, String)>, HandlerError> {
    let rows: Vec<ClientRow> = insert
        .iter()
        .map(|a| ClientRow {
            new: &a.new,
            psp_id: a.psp.psp_id,
            external_id: a.profile.external_id.as_deref(),
            metadata: a.profile.metadata.as_ref(),
            identity: &a.profile.identity,
            address: a.profile.address.as_ref(),
            direct_partner_id: a.profile.resolved.as_ref().map(|r| r.direct.id),
            is_active: a.profile.is_active,
            description: a.profile.description.as_deref(),
            contact: a.profile.contact.as_ref(),
        })
        .collect();
    let clients = store::clients::insert_clients(cx.conn, &rows)
        .await
        .map_err(taken_meanwhile)?;
    // Each client by the email it was inserted with: the batch's emails are distinct (even
    // folded: the checks above keep one command per folded email).
    let by_email: HashMap<&str, &crate::domain::Client> =
        clients.iter().map(|c| (c.email.as_str(), c)).collect();
    let clients: Vec<&crate::domain::Client> = insert
        .iter()
        .map(|a| by_email[a.new.email.as_str()])
        .collect();
    let created: HashMap<&'a str, (i32, String)> = insert
        .iter()
        .zip(&clients)
        .filter_map(|(a, c)| {
            let e = a.profile.external_id.as_deref()?;
            Some((e, (c.client_id, c.client_code.clone())))
        })
        .collect();

    // Related people, for every client created with some, in one statement.
    let related: Vec<(i32, &NewRelation)> = insert
        .iter()
        .zip(&clients)
        .flat_map(|(a, c)| a.profile.relations.iter().map(|r| (c.client_id, r)))
        .collect();
    let mut relations: HashMap<i32, Vec<store::relations::Relation>> = HashMap::new();
    for r in store::relations::insert_many(cx.conn, &related).await? {
        relations.entry(r.client_id).or_default().push(r);
    }

    // What happens next is recorded, not assumed: Xendit customers for Xendit clients, then
    // the welcome email, then completion. Where this worker has room to run the first step
    // (a slot, reserved now), the sagas are leased to it and it carries them on as soon as
    // the batch commits; the others are due at once, for a sweeper with room.
    let lease = cx.settings.saga.lease_seconds as f64;
    let mut slots: HashMap<Step, Option<Arc<Slot>>> = HashMap::new();
    let mut sagas = Vec::with_capacity(insert.len());
    for (a, client) in insert.iter().zip(&clients) {
        let meta = a.meta;
        let first_step = Step::first(a.psp.is_xendit());
        let slot = slots
            .entry(first_step)
            .or_insert_with(|| cx.slots.reserve(first_step).map(Arc::new));
        sagas.push(NewSaga {
            saga_id: derived_id(&meta.message_id, "saga"),
            client_id: client.client_id,
            message_id: &meta.message_id,
            correlation_id: &meta.correlation_id,
            reply_to: meta.reply_to.as_deref(),
            traceparent: meta.traceparent.as_deref(),
            first_step,
            data: json!({ "psp": { "psp_id": a.psp.psp_id, "psp_name": a.psp.psp_name } }),
            leased: slot.is_some(),
        });
    }
    // The admins and their sagas in one statement (the month's code counter is held from the
    // client insert to commit: one round trip fewer under it).
    let admin_rows: Vec<_> = clients
        .iter()
        .zip(&access)
        .map(|(c, a)| (*c, a.as_ref().map(|(_, stored)| stored)))
        .collect();
    let admins =
        store::clients::insert_admins_with_sagas(cx.conn, &admin_rows, &sagas, cx.worker_id, lease)
            .await
            .map_err(taken_meanwhile)?;
    let by_client: HashMap<i32, &crate::domain::AdminUser> =
        admins.iter().map(|u| (u.client_id, u)).collect();

    for (((a, client), saga), access) in insert.iter().zip(&clients).zip(sagas).zip(access) {
        let admin = by_client[&client.client_id];
        let related = relations.remove(&client.client_id);
        let data = CreatedData {
            body: CreatedBody::new(client, admin),
            psp: PspRef {
                psp_id: a.psp.psp_id,
                psp_name: &a.psp.psp_name,
            },
            saga: SagaRef {
                saga_id: saga.saga_id,
                next_step: saga.first_step.as_str(),
            },
            relations: related.as_deref(),
        };
        // The reply to `reply_to` waits for completion, when the whole REST body is known.
        let mut outcome = Outcome::succeeded(vec![OutgoingMessage::serialized_event(
            a.meta, CREATED, &data,
        )]);
        // The job goes with the outcome either way (an import announces the client from it);
        // only one with a slot is run here.
        outcome.sagas.push(SagaJob {
            saga_id: saga.saga_id,
            step: saga.first_step,
            attempts: 0,
            origin: CommandMeta::clone(a.meta),
            client_id: client.client_id,
            admin_user_id: admin.user_id,
            snapshot: Some(((*client).clone(), admin.clone())),
            data: saga.data,
            access: access.map(|(first, _)| first),
            epoch: store::sagas::FIRST_EPOCH,
            // Claimed with the insert when the first step is the email.
            send_claimed: saga.first_step == Step::WelcomeEmail,
            slot: slots[&saga.first_step].clone(),
            span: tracing::Span::none(),
        });
        decisions[a.index] = Some(Decision::Done(outcome));
    }
    Ok(created)
}

/// A unique index refused a row the batch had checked: another transaction took its email or
/// external id after the check. The batch is tried again at once, and its check sees it.
fn taken_meanwhile(e: sqlx::Error) -> HandlerError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => HandlerError::Contended(format!(
            "{} was taken while the batch ran",
            db.constraint().unwrap_or("a unique value")
        )),
        _ => HandlerError::Database(e),
    }
}

/// `client.created`'s data: the seed's 201 body, the PSP chosen, the saga and its first step,
/// and the relations written with the client (when there were any).
#[derive(serde::Serialize)]
struct CreatedData<'a> {
    #[serde(flatten)]
    body: CreatedBody<'a>,
    psp: PspRef<'a>,
    saga: SagaRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    relations: Option<&'a [store::relations::Relation]>,
}

#[derive(serde::Serialize)]
struct PspRef<'a> {
    psp_id: i32,
    psp_name: &'a str,
}

#[derive(serde::Serialize)]
struct SagaRef {
    saga_id: uuid::Uuid,
    next_step: &'static str,
}
