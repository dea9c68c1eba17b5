//! The outcome codes, statuses and texts upstream clients already depend on (DESIGN.md,
//! "Outcomes and errors"). One table, so a handler cannot misspell a contract text. A business
//! rule's answer, so it lives with the rules (the domain), and `messages` re-exports it.
//!
//! Codes beyond DESIGN.md's table: INSTANCE_NAME_TAKEN (409, a name the client already uses),
//! ALIAS_REQUIRED (400, the seed's "Alias and Instance ID are required."), INVALID_CURSOR
//! (400, a `client.list` cursor we did not write), and from the lifecycle rules
//! EKYC_NOT_APPROVED (409, approval before eKYC is APPROVED) next to INVALID_TRANSITION.
//! From the core (issue 9): IDEMPOTENCY_KEY_REUSED (422, a message_id reused for another
//! command), VALUE_TOO_LONG (400, a value wider than its column once normalised) and
//! INTERNAL_ERROR (500, in `command.failed`: the command was dead-lettered for an operator).
//! From the client profile (issue 10), beside the contract's codes and texts: the texts of
//! EXTERNAL_ID_IMMUTABLE and PARTNER_NAME_TAKEN (the contract names only their codes), and
//! METADATA_TOO_LARGE (400) and IDENTITY_INCOMPLETE (400) for limits the contract states
//! without a code.
//! From relations (issue 11), beside the contract's: RELATION_INVALID (400), a relation kind
//! that is none of the four (the schemas already refuse it; this is the handler's own guard),
//! and the texts of SOURCE_NOT_CONFIGURED and SOURCE_RECORD_NOT_FOUND (the contract names
//! only their codes and statuses).
//! From the seeds' remaining rules (issue 21): INVALID_PHONE (400), INVALID_COUNTRY (400),
//! CORPORATION_TYPE_NOT_CORPORATE (400); seed 000's per-endpoint texts for an actor linked to
//! no client ("User not found or not linked to any client" under CLIENT_ID_NOT_FOUND, "Client
//! not found for this user." under CLIENT_NOT_FOUND).

use serde::Serialize;

use super::lifecycle;

/// A business refusal: the command was understood and said no to. It is an outcome, not a
/// failure of the worker: recorded, announced, replied to and acked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub code: &'static str,
    pub status: u16,
    pub message: String,
}

impl Refusal {
    fn fixed(code: &'static str, status: u16, message: &str) -> Refusal {
        Refusal {
            code,
            status,
            message: message.to_string(),
        }
    }

    pub fn validation_failed() -> Refusal {
        Self::fixed(
            "VALIDATION_FAILED",
            400,
            "Email, Name, Type, Country and Mobile Number are required!",
        )
    }

    pub fn email_in_use() -> Refusal {
        Self::fixed(
            "EMAIL_IN_USE",
            409,
            "Email is already in use by another client.",
        )
    }

    pub fn no_psp_for_country() -> Refusal {
        Self::fixed(
            "NO_PSP_FOR_COUNTRY",
            400,
            "No PSP available for the selected country.",
        )
    }

    pub fn no_fiat_psp_for_country() -> Refusal {
        Self::fixed(
            "NO_FIAT_PSP_FOR_COUNTRY",
            400,
            "There is no FIAT_PSP PSP available for that country.",
        )
    }

    pub fn instance_name_required() -> Refusal {
        Self::fixed("INSTANCE_NAME_REQUIRED", 400, "Instance name is required")
    }

    pub fn client_id_not_found() -> Refusal {
        Self::fixed("CLIENT_ID_NOT_FOUND", 403, "Client ID not found")
    }

    /// `instance.delete` by a user linked to no client: seed 000's text for that endpoint,
    /// under the code and status of the other endpoints' "Client ID not found".
    pub fn user_not_linked() -> Refusal {
        Self::fixed(
            "CLIENT_ID_NOT_FOUND",
            403,
            "User not found or not linked to any client",
        )
    }

    /// `instance.list` by a user linked to no client: seed 000's text for Get My Instances.
    pub fn client_not_found_for_user() -> Refusal {
        Self::fixed("CLIENT_NOT_FOUND", 404, "Client not found for this user.")
    }

    pub fn access_denied() -> Refusal {
        Self::fixed(
            "ACCESS_DENIED",
            403,
            "Access denied. The instance is not yours.",
        )
    }

    pub fn instance_not_found() -> Refusal {
        Self::fixed(
            "INSTANCE_NOT_FOUND",
            404,
            "Instance not found or does not belong to your client",
        )
    }

    pub fn client_not_found() -> Refusal {
        Self::fixed("CLIENT_NOT_FOUND", 404, "Client not found")
    }

    /// A second instance with a name the client already uses (the unique index decides).
    /// Not in the seed, which only says "unique within client"; 409 like EMAIL_IN_USE.
    pub fn instance_name_taken() -> Refusal {
        Self::fixed(
            "INSTANCE_NAME_TAKEN",
            409,
            "Instance name is already in use by your client",
        )
    }

    /// `instance.update_alias` without an alias or an instance id: the seed's text for that
    /// endpoint.
    pub fn alias_required() -> Refusal {
        Self::fixed("ALIAS_REQUIRED", 400, "Alias and Instance ID are required.")
    }

    /// A `client.list` cursor this worker did not write (or a future version did).
    pub fn invalid_cursor() -> Refusal {
        Self::fixed(
            "INVALID_CURSOR",
            400,
            "Invalid cursor: use the next_cursor of the previous page",
        )
    }

    /// A value that fits the schema but not its column once normalised (trimmed,
    /// upper-cased): refused before the database would refuse it on every retry.
    pub fn value_too_long(field: &str, width: usize) -> Refusal {
        Refusal {
            code: "VALUE_TOO_LONG",
            status: 400,
            message: format!("{field} must be at most {width} characters."),
        }
    }

    /// A `message_id` seen before with another command (type or body): the idempotency key
    /// was reused. Nothing changes; the first command's outcome stands.
    pub fn idempotency_key_reused() -> Refusal {
        Self::fixed(
            "IDEMPOTENCY_KEY_REUSED",
            422,
            "message_id was already used for a different command.",
        )
    }

    /// A command the worker cannot process at all (a body it cannot read, a value the
    /// database refuses): dead-lettered for an operator, announced as `command.failed`.
    pub fn internal_error() -> Refusal {
        Self::fixed(
            "INTERNAL_ERROR",
            500,
            "The command could not be processed; it was set aside for an operator.",
        )
    }

    /// A create or update that would repeat another live client's external_id.
    pub fn external_id_in_use() -> Refusal {
        Self::fixed(
            "EXTERNAL_ID_IN_USE",
            409,
            "A client with this external_id already exists.",
        )
    }

    /// An update that would change an external_id once set (the contract names the code;
    /// the text is ours).
    pub fn external_id_immutable() -> Refusal {
        Self::fixed(
            "EXTERNAL_ID_IMMUTABLE",
            409,
            "external_id cannot be changed once set.",
        )
    }

    /// `client.update` with a `version` that is not the client's current one.
    pub fn version_conflict(given: i64, current: i32) -> Refusal {
        Refusal {
            code: "VERSION_CONFLICT",
            status: 409,
            message: format!(
                "The client was changed: version {given} is not the current version {current}."
            ),
        }
    }

    pub fn invalid_region() -> Refusal {
        Self::fixed(
            "INVALID_REGION",
            400,
            "Region must be an ISO 3166-2 subdivision code for US, CA and MX addresses.",
        )
    }

    pub fn partner_not_found() -> Refusal {
        Self::fixed("PARTNER_NOT_FOUND", 404, "Partner not found")
    }

    /// `partner.create` with a name another partner has, whatever its case (the contract
    /// names the code; the text is ours).
    pub fn partner_name_taken() -> Refusal {
        Self::fixed(
            "PARTNER_NAME_TAKEN",
            409,
            "A partner with this name already exists.",
        )
    }

    pub fn client_inactive() -> Refusal {
        Self::fixed("CLIENT_INACTIVE", 409, "Client is inactive")
    }

    /// A change to a client in a final lifecycle state (REJECTED, EXITED).
    pub fn client_read_only(state: &str) -> Refusal {
        Refusal {
            code: "CLIENT_READ_ONLY",
            status: 409,
            message: format!("Client can no longer be changed in state {state}."),
        }
    }

    /// A phone number that is not 7 to 15 digits with an optional `+` once spaces, dashes,
    /// dots and parentheses are removed (ours: the seeds give the format, not a code).
    pub fn invalid_phone(field: &str) -> Refusal {
        Refusal {
            code: "INVALID_PHONE",
            status: 400,
            message: format!(
                "{field} must be 7 to 15 digits, optionally after a +; spaces, dashes, dots and \
                 parentheses are ignored."
            ),
        }
    }

    /// A `country_code` that is not an ISO 3166-1 alpha-2 code.
    pub fn invalid_country() -> Refusal {
        Self::fixed(
            "INVALID_COUNTRY",
            400,
            "country_code must be an ISO 3166-1 alpha-2 code.",
        )
    }

    /// `corporation_type` given for an individual identity.
    pub fn corporation_type_not_corporate() -> Refusal {
        Self::fixed(
            "CORPORATION_TYPE_NOT_CORPORATE",
            400,
            "corporation_type applies to corporate identities only.",
        )
    }

    /// Metadata past its limits once merged (ours: the contract gives the limits, not a code).
    pub fn metadata_too_large() -> Refusal {
        Self::fixed(
            "METADATA_TOO_LARGE",
            400,
            "metadata must hold at most 50 keys and 8 KiB of JSON.",
        )
    }

    /// An individual identity without both names (ours).
    pub fn identity_incomplete() -> Refusal {
        Self::fixed(
            "IDENTITY_INCOMPLETE",
            400,
            "An individual identity needs both given_name and family_name.",
        )
    }

    pub fn relations_ambiguous() -> Refusal {
        Self::fixed(
            "RELATIONS_AMBIGUOUS",
            400,
            "Send either relation or relations, not both.",
        )
    }

    pub fn too_many_relations() -> Refusal {
        Self::fixed(
            "TOO_MANY_RELATIONS",
            400,
            "At most 10 relations can be added at once.",
        )
    }

    pub fn relations_corporate_only() -> Refusal {
        Self::fixed(
            "RELATIONS_CORPORATE_ONLY",
            409,
            "Only corporate clients can have relations.",
        )
    }

    pub fn relation_not_found() -> Refusal {
        Self::fixed("RELATION_NOT_FOUND", 404, "Relation not found")
    }

    pub fn relation_invalid() -> Refusal {
        Self::fixed(
            "RELATION_INVALID",
            400,
            "relation must be one of director, shareholder, director-and-shareholder, \
             authorized-person.",
        )
    }

    pub fn source_not_configured() -> Refusal {
        Self::fixed(
            "SOURCE_NOT_CONFIGURED",
            400,
            "No source system of this name is configured.",
        )
    }

    pub fn source_record_not_found() -> Refusal {
        Self::fixed(
            "SOURCE_RECORD_NOT_FOUND",
            404,
            "The source system has no such record.",
        )
    }

    /// The refusal a code stands for, where its text is fixed (not VERSION_CONFLICT,
    /// VALUE_TOO_LONG or CLIENT_READ_ONLY, whose texts name values): what `onboard import`
    /// writes beside a refused row's code.
    pub fn known(code: &str) -> Option<Refusal> {
        Some(match code {
            "VALIDATION_FAILED" => Self::validation_failed(),
            "EMAIL_IN_USE" => Self::email_in_use(),
            "NO_PSP_FOR_COUNTRY" => Self::no_psp_for_country(),
            "NO_FIAT_PSP_FOR_COUNTRY" => Self::no_fiat_psp_for_country(),
            "CLIENT_NOT_FOUND" => Self::client_not_found(),
            "IDEMPOTENCY_KEY_REUSED" => Self::idempotency_key_reused(),
            "EXTERNAL_ID_IN_USE" => Self::external_id_in_use(),
            "INVALID_REGION" => Self::invalid_region(),
            "PARTNER_NOT_FOUND" => Self::partner_not_found(),
            "METADATA_TOO_LARGE" => Self::metadata_too_large(),
            "IDENTITY_INCOMPLETE" => Self::identity_incomplete(),
            "RELATIONS_AMBIGUOUS" => Self::relations_ambiguous(),
            "TOO_MANY_RELATIONS" => Self::too_many_relations(),
            "RELATIONS_CORPORATE_ONLY" => Self::relations_corporate_only(),
            "RELATION_INVALID" => Self::relation_invalid(),
            "SOURCE_NOT_CONFIGURED" => Self::source_not_configured(),
            "SOURCE_RECORD_NOT_FOUND" => Self::source_record_not_found(),
            "INVALID_COUNTRY" => Self::invalid_country(),
            "CORPORATION_TYPE_NOT_CORPORATE" => Self::corporation_type_not_corporate(),
            _ => return None,
        })
    }

    /// The REST-shaped error body of the seed: `{"error": "..."}`.
    pub fn error_body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.message })
    }
}

/// A lifecycle refusal in the contract's terms: INVALID_TRANSITION (409, naming the current
/// status and the action) or EKYC_NOT_APPROVED (409).
impl From<lifecycle::Refusal> for Refusal {
    fn from(refusal: lifecycle::Refusal) -> Refusal {
        Refusal {
            code: refusal.code(),
            status: refusal.status(),
            message: refusal.message(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_the_seeds_word_for_word() {
        let table = [
            (
                Refusal::validation_failed(),
                "VALIDATION_FAILED",
                400,
                "Email, Name, Type, Country and Mobile Number are required!",
            ),
            (
                Refusal::email_in_use(),
                "EMAIL_IN_USE",
                409,
                "Email is already in use by another client.",
            ),
            (
                Refusal::no_psp_for_country(),
                "NO_PSP_FOR_COUNTRY",
                400,
                "No PSP available for the selected country.",
            ),
            (
                Refusal::no_fiat_psp_for_country(),
                "NO_FIAT_PSP_FOR_COUNTRY",
                400,
                "There is no FIAT_PSP PSP available for that country.",
            ),
            (
                Refusal::instance_name_required(),
                "INSTANCE_NAME_REQUIRED",
                400,
                "Instance name is required",
            ),
            (
                Refusal::client_id_not_found(),
                "CLIENT_ID_NOT_FOUND",
                403,
                "Client ID not found",
            ),
            (
                Refusal::access_denied(),
                "ACCESS_DENIED",
                403,
                "Access denied. The instance is not yours.",
            ),
            (
                Refusal::instance_not_found(),
                "INSTANCE_NOT_FOUND",
                404,
                "Instance not found or does not belong to your client",
            ),
            (
                Refusal::client_not_found(),
                "CLIENT_NOT_FOUND",
                404,
                "Client not found",
            ),
            (
                Refusal::alias_required(),
                "ALIAS_REQUIRED",
                400,
                "Alias and Instance ID are required.",
            ),
        ];
        for (refusal, code, status, message) in table {
            assert_eq!(refusal.code, code);
            assert_eq!(refusal.status, status, "{code}");
            assert_eq!(refusal.message, message, "{code}");
            assert_eq!(
                refusal.error_body(),
                serde_json::json!({ "error": message })
            );
        }
    }

    #[test]
    fn lifecycle_refusals_keep_their_code_status_and_message() {
        use lifecycle::{ClientStatus, EkycStatus, InvalidTransition, LifecycleAction};
        let invalid: Refusal = lifecycle::Refusal::from(InvalidTransition {
            from: ClientStatus::Rejected,
            action: LifecycleAction::Approve,
        })
        .into();
        assert_eq!(invalid.code, "INVALID_TRANSITION");
        assert_eq!(invalid.status, 409);
        assert_eq!(invalid.message, "Cannot approve a client that is REJECTED.");
        let ekyc: Refusal = lifecycle::Refusal::EkycNotApproved {
            ekyc: EkycStatus::Pending,
        }
        .into();
        assert_eq!(ekyc.code, "EKYC_NOT_APPROVED");
        assert_eq!(ekyc.status, 409);
        assert_eq!(
            ekyc.message,
            "Client eKYC must be APPROVED before approval; it is PENDING."
        );
    }

    #[test]
    fn the_profile_refusals_have_the_contracts_codes_statuses_and_texts() {
        let table = [
            (
                Refusal::external_id_in_use(),
                "EXTERNAL_ID_IN_USE",
                409,
                "A client with this external_id already exists.",
            ),
            (
                Refusal::version_conflict(3, 4),
                "VERSION_CONFLICT",
                409,
                "The client was changed: version 3 is not the current version 4.",
            ),
            (
                Refusal::invalid_region(),
                "INVALID_REGION",
                400,
                "Region must be an ISO 3166-2 subdivision code for US, CA and MX addresses.",
            ),
            (
                Refusal::partner_not_found(),
                "PARTNER_NOT_FOUND",
                404,
                "Partner not found",
            ),
            (
                Refusal::client_inactive(),
                "CLIENT_INACTIVE",
                409,
                "Client is inactive",
            ),
            (
                Refusal::client_read_only("EXITED"),
                "CLIENT_READ_ONLY",
                409,
                "Client can no longer be changed in state EXITED.",
            ),
            (
                Refusal::relations_ambiguous(),
                "RELATIONS_AMBIGUOUS",
                400,
                "Send either relation or relations, not both.",
            ),
            (
                Refusal::too_many_relations(),
                "TOO_MANY_RELATIONS",
                400,
                "At most 10 relations can be added at once.",
            ),
            (
                Refusal::relations_corporate_only(),
                "RELATIONS_CORPORATE_ONLY",
                409,
                "Only corporate clients can have relations.",
            ),
            (
                Refusal::relation_not_found(),
                "RELATION_NOT_FOUND",
                404,
                "Relation not found",
            ),
        ];
        for (refusal, code, status, message) in table {
            assert_eq!(
                (refusal.code, refusal.status, refusal.message.as_str()),
                (code, status, message)
            );
        }
        assert_eq!(Refusal::external_id_immutable().status, 409);
        assert_eq!(Refusal::partner_name_taken().status, 409);
    }

    #[test]
    fn codes_added_beyond_the_seed_are_conflicts_or_bad_requests() {
        assert_eq!(Refusal::instance_name_taken().status, 409);
        assert_eq!(Refusal::invalid_cursor().status, 400);
        let reused = Refusal::idempotency_key_reused();
        assert_eq!(
            (reused.code, reused.status, reused.message.as_str()),
            (
                "IDEMPOTENCY_KEY_REUSED",
                422,
                "message_id was already used for a different command."
            )
        );
        assert_eq!(Refusal::internal_error().status, 500);
    }
}
