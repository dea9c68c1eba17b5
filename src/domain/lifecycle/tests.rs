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
