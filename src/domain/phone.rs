//! Phone numbers at the edge: one canonical form, whatever punctuation the sender used.
//!
//! Spaces, dashes, dots and parentheses are removed (`+62 812-3456-7890` and
//! `+62 (812) 3456.7890` are both `+6281234567890`); what is left must be 7 to 15 digits
//! (E.164's longest) with an optional leading `+`. Anything else is refused with
//! INVALID_PHONE rather than stored in a form a PSP or a person cannot dial.

use super::refusal::Refusal;

/// The canonical form of `raw`, or INVALID_PHONE naming `field`.
pub fn normalize(field: &str, raw: &str) -> Result<String, Refusal> {
    let kept: String = raw
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '\u{a0}'))
        .collect();
    let digits = kept.strip_prefix('+').unwrap_or(&kept);
    let ok = (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(kept)
    } else {
        Err(Refusal::invalid_phone(field))
    }
}

/// The number in E.164 (`+` and 8 to 15 digits) when it is written with its country code,
/// else `None`: what Xendit's `mobile_number` takes.
pub fn e164(stored: &str) -> Option<String> {
    let digits = stored.strip_prefix('+')?;
    ((8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stored.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctuation_is_removed_and_the_rest_must_be_7_to_15_digits() {
        for (given, canonical) in [
            ("+62 812-3456-7890", "+6281234567890"),
            ("+62 (812) 3456.7890", "+6281234567890"),
            (" 081234567 ", "081234567"),
            ("+6591234567", "+6591234567"),
            ("1234567", "1234567"),
        ] {
            assert_eq!(normalize("phone", given).unwrap(), canonical, "{given}");
        }
        for bad in [
            "",
            "+",
            "123456",
            "+1234567890123456",
            "12345abc",
            "++6591234567",
            "65+91234567",
            "+65 9123 4567 ext 2",
            "６５９１２３４５６７",
        ] {
            let refusal = normalize("phone", bad).unwrap_err();
            assert_eq!(refusal.code, "INVALID_PHONE", "{bad}");
        }
    }

    #[test]
    fn e164_needs_the_country_code() {
        assert_eq!(e164("+6281234567890").as_deref(), Some("+6281234567890"));
        assert_eq!(e164("081234567890"), None);
        assert_eq!(e164("+1234567"), None);
    }
}
