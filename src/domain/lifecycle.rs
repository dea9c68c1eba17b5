//! The client lifecycle: which status a lifecycle command moves a client to, and when
//! it is refused.
//!
//! Plain functions over plain data, so the rules are tested without a broker or a
//! database. A handler loads the client's current status and eKYC status, calls
//! [`decide`], and either stores the new status with the success event
//! ([`LifecycleAction::event_type`]) or answers the [`Refusal`] with its contract code,
//! status and message. A refusal changes nothing.
//!
//! The transition table (DESIGN.md, "Lifecycle"):
//!
//! | action            | from                          | to          |
//! | ----------------- | ----------------------------- | ----------- |
//! | approve           | PENDING                       | APPROVED    |
//! | reject            | PENDING                       | REJECTED    |
//! | first transaction | APPROVED                      | ACTIVE      |
//! | blacklist         | APPROVED, ACTIVE              | BLACKLISTED |
//! | unblacklist       | BLACKLISTED                   | PENDING     |
//! | exit              | APPROVED, ACTIVE, BLACKLISTED | EXITED      |
//!
//! REJECTED and EXITED are final: every action on them is refused.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A status string that is not one of the contract's spellings.
///
/// Parsing is exact (upper case, no surrounding space) because the database and the
/// message contract use one spelling; anything else is a bug upstream or a corrupt row,
/// and should be reported rather than guessed at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}; expected one of {expected}")]
pub struct ParseStatusError {
    /// Which kind of status was being parsed, e.g. "client status".
    pub kind: &'static str,
    /// The text that did not match.
    pub value: String,
    /// The accepted spellings, for the error message.
    pub expected: &'static str,
}

/// Where a client stands in its relationship with the platform (`clients.client_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientStatus {
    /// Created (or taken off the blacklist), waiting for approval.
    Pending,
    /// Approved, no transaction yet.
    Approved,
    /// Approved and has made its first transaction.
    Active,
    /// Application refused. Final.
    Rejected,
    /// Blocked from transacting until taken off the blacklist.
    Blacklisted,
    /// Relationship ended. Final.
    Exited,
}

impl ClientStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [ClientStatus; 6] = [
        ClientStatus::Pending,
        ClientStatus::Approved,
        ClientStatus::Active,
        ClientStatus::Rejected,
        ClientStatus::Blacklisted,
        ClientStatus::Exited,
    ];

    /// The spelling used in the database and in messages, e.g. `"PENDING"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ClientStatus::Pending => "PENDING",
            ClientStatus::Approved => "APPROVED",
            ClientStatus::Active => "ACTIVE",
            ClientStatus::Rejected => "REJECTED",
            ClientStatus::Blacklisted => "BLACKLISTED",
            ClientStatus::Exited => "EXITED",
        }
    }

    /// True for the statuses no action can leave (REJECTED, EXITED).
    pub const fn is_final(self) -> bool {
        matches!(self, ClientStatus::Rejected | ClientStatus::Exited)
    }
}

impl fmt::Display for ClientStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ClientStatus {
    type Err = ParseStatusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ClientStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| ParseStatusError {
                kind: "client status",
                value: s.to_owned(),
                expected: "PENDING, APPROVED, ACTIVE, REJECTED, BLACKLISTED, EXITED",
            })
    }
}

/// Outcome of the client's electronic KYC check (`clients.ekyc_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EkycStatus {
    /// Not yet decided; the status every new client starts with.
    Pending,
    /// Identity verified.
    Approved,
    /// Identity check failed.
    Rejected,
}

impl EkycStatus {
    /// Every eKYC status.
    pub const ALL: [EkycStatus; 3] = [
        EkycStatus::Pending,
        EkycStatus::Approved,
        EkycStatus::Rejected,
    ];

    /// The spelling used in the database and in messages, e.g. `"APPROVED"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EkycStatus::Pending => "PENDING",
            EkycStatus::Approved => "APPROVED",
            EkycStatus::Rejected => "REJECTED",
        }
    }
}

impl fmt::Display for EkycStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EkycStatus {
    type Err = ParseStatusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EkycStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| ParseStatusError {
                kind: "eKYC status",
                value: s.to_owned(),
                expected: "PENDING, APPROVED, REJECTED",
            })
    }
}

/// A command that moves a client through its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifecycleAction {
    /// `client.approve`: PENDING to APPROVED.
    Approve,
    /// `client.reject`: PENDING to REJECTED.
    Reject,
    /// `client.record_first_transaction`: APPROVED to ACTIVE.
    RecordFirstTransaction,
    /// `client.blacklist`: APPROVED or ACTIVE to BLACKLISTED.
    Blacklist,
    /// `client.unblacklist`: BLACKLISTED back to PENDING, to be reviewed again.
    Unblacklist,
    /// `client.exit`: APPROVED, ACTIVE or BLACKLISTED to EXITED.
    Exit,
}

impl LifecycleAction {
    /// Every lifecycle action, in the order of DESIGN.md's table.
    pub const ALL: [LifecycleAction; 6] = [
        LifecycleAction::Approve,
        LifecycleAction::Reject,
        LifecycleAction::RecordFirstTransaction,
        LifecycleAction::Blacklist,
        LifecycleAction::Unblacklist,
        LifecycleAction::Exit,
    ];

    /// The event type published when the action succeeds, e.g. `"client.approved"`.
    /// The first transaction publishes `client.activated`, after the status it reaches.
    pub const fn event_type(self) -> &'static str {
        match self {
            LifecycleAction::Approve => "client.approved",
            LifecycleAction::Reject => "client.rejected",
            LifecycleAction::RecordFirstTransaction => "client.activated",
            LifecycleAction::Blacklist => "client.blacklisted",
            LifecycleAction::Unblacklist => "client.unblacklisted",
            LifecycleAction::Exit => "client.exited",
        }
    }

    /// How the refusal message names the action: "Cannot {phrase} a client that is ...".
    const fn refusal_phrase(self) -> &'static str {
        match self {
            LifecycleAction::Approve => "approve",
            LifecycleAction::Reject => "reject",
            LifecycleAction::RecordFirstTransaction => "record a first transaction for",
            LifecycleAction::Blacklist => "blacklist",
            LifecycleAction::Unblacklist => "unblacklist",
            LifecycleAction::Exit => "exit",
        }
    }
}

impl fmt::Display for LifecycleAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.refusal_phrase())
    }
}

/// The action is not allowed from the client's current status; nothing changes.
///
/// Contract: code `INVALID_TRANSITION`, status 409, and a message naming the current
/// status and the action, e.g. "Cannot approve a client that is REJECTED."
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Cannot {} a client that is {from}.", action.refusal_phrase())]
pub struct InvalidTransition {
    /// The client's status when the command arrived (and still).
    pub from: ClientStatus,
    /// The action that was refused.
    pub action: LifecycleAction,
}

impl InvalidTransition {
    /// The contract's code for this refusal.
    pub const CODE: &'static str = "INVALID_TRANSITION";
    /// The contract's HTTP-like status for this refusal (409 Conflict).
    pub const STATUS: u16 = 409;
}

/// The status `action` moves a client in status `from` to, or why it may not.
///
/// Exactly DESIGN.md's lifecycle table; every pair not in it is refused.
pub fn transition(
    from: ClientStatus,
    action: LifecycleAction,
) -> Result<ClientStatus, InvalidTransition> {
    use ClientStatus as S;
    use LifecycleAction as A;

    match (from, action) {
        (S::Pending, A::Approve) => Ok(S::Approved),
        (S::Pending, A::Reject) => Ok(S::Rejected),
        (S::Approved, A::RecordFirstTransaction) => Ok(S::Active),
        (S::Approved | S::Active, A::Blacklist) => Ok(S::Blacklisted),
        (S::Blacklisted, A::Unblacklist) => Ok(S::Pending),
        (S::Approved | S::Active | S::Blacklisted, A::Exit) => Ok(S::Exited),
        _ => Err(InvalidTransition { from, action }),
    }
}

/// Conditions on a lifecycle action beyond the transition table, set by configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ApprovalPolicy {
    /// Refuse `client.approve` unless the client's eKYC is APPROVED. On by default:
    /// the seed's onboarding message says the admin "must complete KYC before being
    /// able to use the account", and approval is what lets the account transact.
    pub require_ekyc_approved: bool,
}

impl Default for ApprovalPolicy {
    fn default() -> Self {
        ApprovalPolicy {
            require_ekyc_approved: true,
        }
    }
}

/// Why a lifecycle command is refused. A refusal is a business outcome, not a failure
/// of the worker: it ends the command with `client.transition_rejected`, and nothing
/// changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The action is not allowed from the current status.
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    /// Approval requires an approved eKYC and the client's is not.
    #[error("Client eKYC must be APPROVED before approval; it is {ekyc}.")]
    EkycNotApproved {
        /// The client's eKYC status when the command arrived.
        ekyc: EkycStatus,
    },
}

impl Refusal {
    /// The contract's code, e.g. `"INVALID_TRANSITION"`.
    pub const fn code(&self) -> &'static str {
        match self {
            Refusal::InvalidTransition(_) => InvalidTransition::CODE,
            Refusal::EkycNotApproved { .. } => "EKYC_NOT_APPROVED",
        }
    }

    /// The contract's HTTP-like status, carried in replies for an HTTP gateway.
    pub const fn status(&self) -> u16 {
        match self {
            Refusal::InvalidTransition(_) => InvalidTransition::STATUS,
            // 409 rather than 400: the command is well formed, the client's state
            // conflicts with it, and it succeeds unchanged once eKYC is approved.
            Refusal::EkycNotApproved { .. } => 409,
        }
    }

    /// The message for upstream, e.g. "Cannot approve a client that is REJECTED."
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// Decide a lifecycle command: the status to store, or the refusal to answer.
///
/// The transition table is checked first, so an action that is never allowed from the
/// current status is reported as `INVALID_TRANSITION` even when eKYC is also not
/// approved: the caller learns the reason that does not go away by waiting. Only
/// `approve` is gated on eKYC; the other actions follow the table alone.
pub fn decide(
    current: ClientStatus,
    ekyc: EkycStatus,
    action: LifecycleAction,
    policy: &ApprovalPolicy,
) -> Result<ClientStatus, Refusal> {
    let next = transition(current, action)?;
    if action == LifecycleAction::Approve
        && policy.require_ekyc_approved
        && ekyc != EkycStatus::Approved
    {
        return Err(Refusal::EkycNotApproved { ekyc });
    }
    Ok(next)
}

#[cfg(test)]
mod tests;
