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
mod tests {
    use super::*;
    use std::collections::HashSet;

    use ClientStatus::{Active, Approved, Blacklisted, Exited, Pending, Rejected};
    use LifecycleAction::{Approve, Blacklist, Exit, RecordFirstTransaction, Reject, Unblacklist};

    /// DESIGN.md's lifecycle table written out for every (status, action) pair, by hand
    /// and independently of `transition`. `None` means the pair is refused.
    const EXPECTED: [(ClientStatus, LifecycleAction, Option<ClientStatus>); 36] = [
        (Pending, Approve, Some(Approved)),
        (Pending, Reject, Some(Rejected)),
        (Pending, RecordFirstTransaction, None),
        (Pending, Blacklist, None),
        (Pending, Unblacklist, None),
        (Pending, Exit, None),
        (Approved, Approve, None),
        (Approved, Reject, None),
        (Approved, RecordFirstTransaction, Some(Active)),
        (Approved, Blacklist, Some(Blacklisted)),
        (Approved, Unblacklist, None),
        (Approved, Exit, Some(Exited)),
        (Active, Approve, None),
        (Active, Reject, None),
        (Active, RecordFirstTransaction, None),
        (Active, Blacklist, Some(Blacklisted)),
        (Active, Unblacklist, None),
        (Active, Exit, Some(Exited)),
        (Rejected, Approve, None),
        (Rejected, Reject, None),
        (Rejected, RecordFirstTransaction, None),
        (Rejected, Blacklist, None),
        (Rejected, Unblacklist, None),
        (Rejected, Exit, None),
        (Blacklisted, Approve, None),
        (Blacklisted, Reject, None),
        (Blacklisted, RecordFirstTransaction, None),
        (Blacklisted, Blacklist, None),
        (Blacklisted, Unblacklist, Some(Pending)),
        (Blacklisted, Exit, Some(Exited)),
        (Exited, Approve, None),
        (Exited, Reject, None),
        (Exited, RecordFirstTransaction, None),
        (Exited, Blacklist, None),
        (Exited, Unblacklist, None),
        (Exited, Exit, None),
    ];

    #[test]
    fn expected_table_covers_every_status_action_pair_once() {
        let pairs: HashSet<_> = EXPECTED.iter().map(|(s, a, _)| (*s, *a)).collect();
        assert_eq!(pairs.len(), EXPECTED.len(), "a pair is listed twice");
        for status in ClientStatus::ALL {
            for action in LifecycleAction::ALL {
                assert!(
                    pairs.contains(&(status, action)),
                    "{status} / {action} missing"
                );
            }
        }
    }

    #[test]
    fn transition_follows_the_design_table_for_every_pair() {
        for (from, action, expected) in EXPECTED {
            let got = transition(from, action);
            match expected {
                Some(to) => assert_eq!(got, Ok(to), "{from} / {action}"),
                None => assert_eq!(
                    got,
                    Err(InvalidTransition { from, action }),
                    "{from} / {action} should be refused"
                ),
            }
        }
    }

    #[test]
    fn exactly_nine_transitions_are_allowed() {
        let allowed = ClientStatus::ALL
            .into_iter()
            .flat_map(|s| LifecycleAction::ALL.map(|a| transition(s, a)))
            .filter(Result::is_ok)
            .count();
        // approve 1 + reject 1 + first transaction 1 + blacklist 2 + unblacklist 1 + exit 3.
        assert_eq!(allowed, 9);
    }

    #[test]
    fn only_rejected_and_exited_are_final() {
        let finals = [
            (Pending, false),
            (Approved, false),
            (Active, false),
            (Rejected, true),
            (Blacklisted, false),
            (Exited, true),
        ];
        for (status, is_final) in finals {
            assert_eq!(status.is_final(), is_final, "{status}");
        }
    }

    #[test]
    fn final_statuses_refuse_every_action() {
        for from in [Rejected, Exited] {
            for action in LifecycleAction::ALL {
                assert_eq!(
                    transition(from, action),
                    Err(InvalidTransition { from, action })
                );
            }
        }
    }

    #[test]
    fn every_non_final_status_has_a_way_out() {
        for from in [Pending, Approved, Active, Blacklisted] {
            assert!(
                LifecycleAction::ALL
                    .into_iter()
                    .any(|a| transition(from, a).is_ok()),
                "{from} is a dead end"
            );
        }
    }

    #[test]
    fn client_status_spellings_match_the_contract() {
        let spellings = [
            (Pending, "PENDING"),
            (Approved, "APPROVED"),
            (Active, "ACTIVE"),
            (Rejected, "REJECTED"),
            (Blacklisted, "BLACKLISTED"),
            (Exited, "EXITED"),
        ];
        for (status, text) in spellings {
            assert_eq!(status.as_str(), text);
            assert_eq!(status.to_string(), text);
            assert_eq!(text.parse::<ClientStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{text}\"")
            );
            assert_eq!(
                serde_json::from_str::<ClientStatus>(&format!("\"{text}\"")).unwrap(),
                status
            );
        }
    }

    #[test]
    fn client_status_parsing_is_exact_and_says_what_is_accepted() {
        for bad in [
            "approved",
            "Approved",
            " APPROVED",
            "",
            "BLACKLIST",
            "PENDING_APPROVAL",
        ] {
            assert!(bad.parse::<ClientStatus>().is_err(), "{bad:?} parsed");
            assert!(serde_json::from_str::<ClientStatus>(&format!("{bad:?}")).is_err());
        }
        let err = "approved".parse::<ClientStatus>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown client status \"approved\"; expected one of \
             PENDING, APPROVED, ACTIVE, REJECTED, BLACKLISTED, EXITED"
        );
    }

    #[test]
    fn ekyc_status_spellings_match_the_contract() {
        let spellings = [
            (EkycStatus::Pending, "PENDING"),
            (EkycStatus::Approved, "APPROVED"),
            (EkycStatus::Rejected, "REJECTED"),
        ];
        for (status, text) in spellings {
            assert_eq!(status.as_str(), text);
            assert_eq!(status.to_string(), text);
            assert_eq!(text.parse::<EkycStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{text}\"")
            );
            assert_eq!(
                serde_json::from_str::<EkycStatus>(&format!("\"{text}\"")).unwrap(),
                status
            );
        }
        for bad in ["approved", "ACTIVE", "EXITED", ""] {
            assert!(bad.parse::<EkycStatus>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            "ACTIVE".parse::<EkycStatus>().unwrap_err().to_string(),
            "unknown eKYC status \"ACTIVE\"; expected one of PENDING, APPROVED, REJECTED"
        );
    }

    #[test]
    fn actions_map_to_their_command_and_success_event() {
        let names = [
            (Approve, "client.approved"),
            (Reject, "client.rejected"),
            (RecordFirstTransaction, "client.activated"),
            (Blacklist, "client.blacklisted"),
            (Unblacklist, "client.unblacklisted"),
            (Exit, "client.exited"),
        ];
        assert_eq!(LifecycleAction::ALL.len(), names.len());
        for (action, event) in names {
            assert!(LifecycleAction::ALL.contains(&action));
            assert_eq!(action.event_type(), event);
        }
    }

    #[test]
    fn invalid_transition_message_names_the_state_and_the_action() {
        let cases = [
            (
                Rejected,
                Approve,
                "Cannot approve a client that is REJECTED.",
            ),
            (Approved, Reject, "Cannot reject a client that is APPROVED."),
            (
                Pending,
                RecordFirstTransaction,
                "Cannot record a first transaction for a client that is PENDING.",
            ),
            (
                Pending,
                Blacklist,
                "Cannot blacklist a client that is PENDING.",
            ),
            (
                Active,
                Unblacklist,
                "Cannot unblacklist a client that is ACTIVE.",
            ),
            (Exited, Exit, "Cannot exit a client that is EXITED."),
        ];
        for (from, action, message) in cases {
            let err = transition(from, action).unwrap_err();
            assert_eq!(err.to_string(), message);
            let refusal = Refusal::from(err);
            assert_eq!(refusal.code(), "INVALID_TRANSITION");
            assert_eq!(refusal.status(), 409);
            assert_eq!(refusal.message(), message);
        }
    }

    #[test]
    fn approval_policy_requires_ekyc_by_default() {
        assert!(ApprovalPolicy::default().require_ekyc_approved);
        let from_empty: ApprovalPolicy = serde_json::from_str("{}").unwrap();
        assert!(from_empty.require_ekyc_approved);
    }

    #[test]
    fn approve_with_ekyc_approved_moves_pending_to_approved() {
        let policy = ApprovalPolicy::default();
        assert_eq!(
            decide(Pending, EkycStatus::Approved, Approve, &policy),
            Ok(Approved)
        );
    }

    #[test]
    fn approve_without_approved_ekyc_is_refused_with_409() {
        let policy = ApprovalPolicy::default();
        let cases = [
            (
                EkycStatus::Pending,
                "Client eKYC must be APPROVED before approval; it is PENDING.",
            ),
            (
                EkycStatus::Rejected,
                "Client eKYC must be APPROVED before approval; it is REJECTED.",
            ),
        ];
        for (ekyc, message) in cases {
            let refusal = decide(Pending, ekyc, Approve, &policy).unwrap_err();
            assert_eq!(refusal, Refusal::EkycNotApproved { ekyc });
            assert_eq!(refusal.code(), "EKYC_NOT_APPROVED");
            assert_eq!(refusal.status(), 409);
            assert_eq!(refusal.message(), message);
        }
    }

    #[test]
    fn approve_ignores_ekyc_when_the_policy_is_off() {
        let policy = ApprovalPolicy {
            require_ekyc_approved: false,
        };
        for ekyc in [
            EkycStatus::Pending,
            EkycStatus::Approved,
            EkycStatus::Rejected,
        ] {
            assert_eq!(
                decide(Pending, ekyc, Approve, &policy),
                Ok(Approved),
                "{ekyc}"
            );
        }
    }

    #[test]
    fn invalid_transition_is_reported_before_ekyc() {
        let policy = ApprovalPolicy::default();
        for from in [Approved, Active, Rejected, Blacklisted, Exited] {
            let refusal = decide(from, EkycStatus::Pending, Approve, &policy).unwrap_err();
            assert_eq!(
                refusal,
                Refusal::InvalidTransition(InvalidTransition {
                    from,
                    action: Approve
                })
            );
            assert_eq!(refusal.code(), "INVALID_TRANSITION");
        }
        let refusal = decide(Rejected, EkycStatus::Rejected, Approve, &policy).unwrap_err();
        assert_eq!(
            refusal.message(),
            "Cannot approve a client that is REJECTED."
        );
    }

    #[test]
    fn only_approve_is_gated_on_ekyc() {
        // With eKYC not approved and the policy on, every action other than approve
        // still follows the design table exactly.
        let policy = ApprovalPolicy::default();
        for (from, action, expected) in EXPECTED {
            if action == Approve {
                continue;
            }
            for ekyc in [EkycStatus::Pending, EkycStatus::Rejected] {
                let got = decide(from, ekyc, action, &policy);
                match expected {
                    Some(to) => assert_eq!(got, Ok(to), "{from} / {action} / {ekyc}"),
                    None => assert_eq!(
                        got,
                        Err(Refusal::InvalidTransition(InvalidTransition {
                            from,
                            action
                        })),
                        "{from} / {action} / {ekyc}"
                    ),
                }
            }
        }
    }

    #[test]
    fn decide_with_approved_ekyc_matches_the_design_table_for_every_pair() {
        let policy = ApprovalPolicy::default();
        for (from, action, expected) in EXPECTED {
            let got = decide(from, EkycStatus::Approved, action, &policy);
            assert_eq!(got.ok(), expected, "{from} / {action}");
        }
    }
}
