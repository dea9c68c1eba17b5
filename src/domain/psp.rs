//! Which payment service provider a new client gets (seed: PSP Selection Logic).

use chrono::{DateTime, Utc};

use super::refusal::Refusal;

/// A PSP row for the client's country, as the store reads it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PspCandidate {
    pub psp_id: i32,
    pub psp_name: String,
    pub psp_type: Option<String>,
    pub priority: i32,
    pub created_at: DateTime<Utc>,
}

impl PspCandidate {
    /// Xendit clients get Xendit customers (saga step 2).
    pub fn is_xendit(&self) -> bool {
        self.psp_name.eq_ignore_ascii_case("XENDIT")
    }
}

/// The `FIAT_PSP` with the lowest priority number, then the oldest. No PSP at all and no
/// fiat PSP are different refusals with different texts.
pub fn choose_psp(candidates: &[PspCandidate]) -> Result<&PspCandidate, Refusal> {
    if candidates.is_empty() {
        return Err(Refusal::no_psp_for_country());
    }
    candidates
        .iter()
        .filter(|p| p.psp_type.as_deref() == Some("FIAT_PSP"))
        .min_by_key(|p| (p.priority, p.created_at, p.psp_id))
        .ok_or_else(Refusal::no_fiat_psp_for_country)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn psp(id: i32, kind: &str, priority: i32, day: u32) -> PspCandidate {
        PspCandidate {
            psp_id: id,
            psp_name: format!("P{id}"),
            psp_type: Some(kind.to_string()),
            priority,
            created_at: Utc.with_ymd_and_hms(2024, 1, day, 0, 0, 0).unwrap(),
        }
    }

    #[test]
    fn no_candidates_is_no_psp_for_country() {
        assert_eq!(choose_psp(&[]).unwrap_err().code, "NO_PSP_FOR_COUNTRY");
    }

    #[test]
    fn only_non_fiat_candidates_is_no_fiat_psp() {
        let all = [psp(1, "CRYPTO_PSP", 0, 1)];
        assert_eq!(
            choose_psp(&all).unwrap_err().code,
            "NO_FIAT_PSP_FOR_COUNTRY"
        );
    }

    #[test]
    fn lowest_priority_number_wins_then_the_oldest() {
        let all = [
            psp(1, "FIAT_PSP", 2, 1),
            psp(2, "FIAT_PSP", 1, 5),
            psp(3, "FIAT_PSP", 1, 3),
            psp(4, "CRYPTO_PSP", 0, 1),
        ];
        assert_eq!(choose_psp(&all).unwrap().psp_id, 3);
    }
}
