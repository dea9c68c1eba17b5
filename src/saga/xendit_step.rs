//! Step 2: a BUSINESS customer for the client and an INDIVIDUAL customer for its admin at
//! Xendit. The references and idempotency keys come from our ids, so however often this step
//! runs, Xendit holds at most one customer of each. Xendit never fails the onboarding: a
//! permanent refusal, or a transient one that outlasts the step's attempts, is recorded and
//! announced (`client.xendit_failed`), and the saga moves on to the email.

use serde_json::{Value, json};
use sqlx::PgPool;

use super::{Services, lock_at, origin, step_message};
use crate::domain::{AdminUser, Client};
use crate::handlers::{self, Handled, HandlerError, Outcome};
use crate::messages::{Command, OutgoingMessage};
use crate::store::{self, sagas::Saga, sagas::Step, xendit_customers::Owner};
use crate::xendit::{
    BusinessInput, CustomerRequest, IndividualInput, XenditError, idempotency_key, reference_id,
};

pub const CREATED: &str = "client.xendit_customers_created";
pub const FAILED: &str = "client.xendit_failed";

/// One customer's fate in this run.
enum Fate {
    /// Created now, or found (recorded by an earlier run, or recovered from Xendit).
    Ready(String),
    Failed {
        code: String,
        message: String,
        transient: bool,
    },
}

struct Wanted {
    owner: Owner,
    reference: String,
    request: CustomerRequest,
    kind: &'static str,
}

fn wanted(services: &Services, client: &Client, admin: &AdminUser) -> [Wanted; 2] {
    let ns = &services.settings.xendit_reference_namespace;
    let business = reference_id(ns, "client", client.client_id);
    let individual = reference_id(ns, "user", admin.user_id);
    [
        Wanted {
            owner: Owner::Client(client.client_id),
            request: CustomerRequest::business(
                &business,
                BusinessInput {
                    client_alias: client.client_alias.clone(),
                    client_type: client.client_type.clone(),
                    email: client.email.clone(),
                    phone: client.phone.clone(),
                },
            ),
            reference: business,
            kind: "BUSINESS",
        },
        Wanted {
            owner: Owner::User(admin.user_id),
            request: CustomerRequest::individual(
                &individual,
                IndividualInput {
                    given_names: admin.username.clone(),
                    email: admin.email.clone(),
                    phone: admin.phone.clone(),
                },
            ),
            reference: individual,
            kind: "INDIVIDUAL",
        },
    ]
}

async fn ensure(pool: &PgPool, services: &Services, w: &Wanted) -> Result<Fate, HandlerError> {
    if let Some(id) =
        store::xendit_customers::find(&mut *pool.acquire().await?, &w.reference).await?
    {
        return Ok(Fate::Ready(id));
    }
    let Some(xendit) = &services.xendit else {
        return Ok(Fate::Failed {
            code: "XENDIT_NOT_CONFIGURED".into(),
            message: "No Xendit API key is configured for this worker.".into(),
            transient: false,
        });
    };
    Ok(
        match xendit
            .create_customer(&w.request, &idempotency_key(&w.reference))
            .await
        {
            Ok(customer) => Fate::Ready(customer.id),
            Err(e) => Fate::Failed {
                code: e.error_code().unwrap_or(kind_of(&e)).to_string(),
                message: e.to_string(),
                transient: e.is_transient(),
            },
        },
    )
}

fn kind_of(e: &XenditError) -> &'static str {
    if e.is_transient() {
        "XENDIT_UNAVAILABLE"
    } else {
        "XENDIT_ERROR"
    }
}

fn describe(w: &Wanted, fate: &Fate) -> Value {
    match fate {
        Fate::Ready(id) => {
            json!({ "status": "success", "customer_id": id, "customer_type": w.kind })
        }
        Fate::Failed { code, message, .. } => json!({
            "status": "failed",
            "customer_type": w.kind,
            "error": { "code": code, "message": message },
        }),
    }
}

pub async fn run(
    pool: &PgPool,
    services: &Services,
    cmd: &Command,
    saga: &Saga,
    client: &Client,
    admin: &AdminUser,
) -> Result<Handled, HandlerError> {
    let [business, individual] = wanted(services, client, admin);
    let (b, i) = tokio::join!(
        ensure(pool, services, &business),
        ensure(pool, services, &individual)
    );
    let fates = [(business, b?), (individual, i?)];
    if let Some(hook) = &services.after_xendit_answered {
        hook().await;
    }

    // Keep what succeeded whatever happens next, so a retry asks Xendit only for the rest.
    let mut tx = pool.begin().await?;
    for (w, fate) in &fates {
        if let Fate::Ready(id) = fate {
            store::xendit_customers::insert(&mut tx, w.owner, id, &w.reference, w.kind).await?;
        }
    }
    tx.commit().await?;

    let budget = services
        .settings
        .xendit_max_attempts
        .min(services.max_delayed_attempts);
    let transient_failure = fates.iter().find_map(|(w, f)| match f {
        Fate::Failed {
            transient: true,
            message,
            ..
        } => Some(format!("{} customer: {message}", w.kind)),
        _ => None,
    });
    if let Some(error) = &transient_failure
        && cmd.meta.attempt + 1 < budget
    {
        let _ = store::sagas::record_failure(pool, saga.saga_id, error).await;
        return Err(HandlerError::RetryLater(format!("Xendit: {error}")));
    }

    let Some((mut tx, saga)) = lock_at(pool, saga.saga_id, Step::Xendit).await? else {
        return Ok(Handled::Duplicate);
    };
    let integration = json!({
        "psp_provider": "XENDIT",
        "business_customer": describe(&fates[0].0, &fates[0].1),
        "admin_customer": describe(&fates[1].0, &fates[1].1),
    });
    let failed = fates.iter().any(|(_, f)| matches!(f, Fate::Failed { .. }));
    let origin = origin(&saga, cmd.meta.traceparent.as_deref());
    let mut data = json!({ "client_id": client.client_id, "saga_id": saga.saga_id });
    data["business_customer"] = integration["business_customer"].clone();
    data["admin_customer"] = integration["admin_customer"].clone();
    let event = if failed {
        data["attempts"] = json!(cmd.meta.attempt + 1);
        data["next_step"] = json!(Step::WelcomeEmail.as_str());
        tracing::warn!(
            client_id = client.client_id,
            "Xendit customers not created; onboarding continues without them"
        );
        OutgoingMessage::event(&origin, FAILED, data)
    } else {
        OutgoingMessage::event(&origin, CREATED, data)
    };
    store::sagas::advance(
        &mut tx,
        saga.saga_id,
        Step::WelcomeEmail,
        &json!({ "xendit_integration": integration }),
    )
    .await?;
    let next = step_message(
        saga.saga_id,
        Step::WelcomeEmail,
        &saga.correlation_id,
        cmd.meta.traceparent.as_deref(),
    );
    handlers::finish(tx, cmd, Outcome::succeeded(vec![event, next])).await
}
