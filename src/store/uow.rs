//! The unit of work every command and every saga step goes through: one transaction that
//! claims the inbox first (commands), makes the effects, writes what is to be said to the
//! outbox, and commits. Nothing is published or acked before [`UnitOfWork::commit`] returns.

use std::collections::HashSet;

use sqlx::{PgConnection, PgPool};

use super::inbox::{self, Claim};
use super::outbox::{self, OutboxRow, WriterClaim};
use crate::messages::OutgoingMessage;

type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

pub struct UnitOfWork {
    tx: Tx,
    /// Events and replies decided so far, written to the outbox at commit.
    said: Vec<OutgoingMessage>,
    /// Who publishes them: the writer (claimed with the insert), or the relays (`None`).
    claim: Option<WriterClaim>,
    /// The transaction's id, once read (with the inbox claim).
    txid: Option<i64>,
}

impl UnitOfWork {
    /// Begins a unit of work whose outbox rows are claimed by `claim`'s worker, which
    /// publishes them after commit (`outbox::Dispatcher::begin` gives its own); with `None`
    /// they are left to the relays.
    pub async fn begin(
        pool: &PgPool,
        claim: Option<WriterClaim>,
    ) -> Result<UnitOfWork, sqlx::Error> {
        Ok(UnitOfWork {
            tx: pool.begin().await?,
            said: Vec::new(),
            claim,
            txid: None,
        })
    }

    /// The transaction, for the effects.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Claims message ids before anything else happens (see [`inbox::claim`]);
    /// returns the ones claimed now. The rest were handled before.
    pub async fn claim(&mut self, claims: &[Claim<'_>]) -> Result<HashSet<String>, sqlx::Error> {
        if claims.is_empty() {
            return Ok(HashSet::new());
        }
        let (claimed, txid) = inbox::claim(&mut self.tx, claims).await?;
        self.txid = self.txid.or(txid);
        Ok(claimed)
    }

    /// The transaction's id (assigned now if it has written nothing yet), to ask
    /// `store::txid_committed` whether it committed when the answer to COMMIT was lost. Read
    /// with the inbox claim when it claimed anything; otherwise in a statement of its own.
    pub async fn txid(&mut self) -> Result<i64, sqlx::Error> {
        if let Some(txid) = self.txid {
            return Ok(txid);
        }
        let txid = sqlx::query_scalar("SELECT txid_current()")
            .fetch_one(&mut *self.tx)
            .await?;
        self.txid = Some(txid);
        Ok(txid)
    }

    /// Opens a savepoint: what follows can be undone alone ([`Self::rollback_to_savepoint`])
    /// without losing what came before. Savepoints share one name: one opened while another is
    /// still open nests inside it, and a rollback or release takes the innermost (a savepoint
    /// whose work is kept may stay open until COMMIT, which ends them all).
    pub async fn savepoint(&mut self) -> Result<(), sqlx::Error> {
        sqlx::raw_sql("SAVEPOINT command")
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Keeps what was done since [`Self::savepoint`].
    pub async fn release_savepoint(&mut self) -> Result<(), sqlx::Error> {
        sqlx::raw_sql("RELEASE SAVEPOINT command")
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Undoes everything since [`Self::savepoint`] (also after an error, which leaves the
    /// transaction usable again), and closes the savepoint.
    pub async fn rollback_to_savepoint(&mut self) -> Result<(), sqlx::Error> {
        sqlx::raw_sql("ROLLBACK TO SAVEPOINT command; RELEASE SAVEPOINT command")
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Queues messages to be published once this unit of work committed.
    pub fn say(&mut self, messages: impl IntoIterator<Item = OutgoingMessage>) {
        self.said.extend(messages);
    }

    /// Writes the outbox rows (one statement) and commits; returns the rows written, for the
    /// caller to publish at once (`outbox::Dispatcher`).
    pub async fn commit(mut self) -> Result<Vec<OutboxRow>, sqlx::Error> {
        let said = std::mem::take(&mut self.said);
        let rows = outbox::insert(&mut self.tx, said, self.claim).await?;
        self.tx.commit().await?;
        Ok(rows)
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}
