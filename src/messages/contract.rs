//! The outcome codes, statuses and texts upstream clients already depend on (DESIGN.md,
//! "Outcomes and errors"). One table, so a handler cannot misspell a contract text.

use serde::Serialize;

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

    /// The REST-shaped error body of the seed: `{"error": "..."}`.
    pub fn error_body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.message })
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
}
