//! ISO 3166-1 alpha-2: the country codes `client.create` takes (`country_code`), from the
//! ISO data of the `rust_iso3166` crate (which also gives the addresses' subdivision codes).

/// Whether `code` (upper case) is an assigned ISO 3166-1 alpha-2 code. User-assigned codes
/// (`XX`, `ZZ`, `AA`, `QM`–`QZ`, `XA`–`XZ`) are not.
pub fn is_alpha2(code: &str) -> bool {
    code.len() == 2 && rust_iso3166::from_alpha2(code).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigned_codes_only_in_upper_case() {
        for code in ["ID", "SG", "US", "GB", "AQ", "FR", "ZW", "AD"] {
            assert!(is_alpha2(code), "{code}");
        }
        for code in ["XX", "ZZ", "AA", "QZ", "UK", "IDN", "id", "", "S"] {
            assert!(!is_alpha2(code), "{code}");
        }
    }
}
