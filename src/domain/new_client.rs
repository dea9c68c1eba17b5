//! The body of `client.create`, parsed: once a [`NewClient`] exists, its five contract fields
//! are present, trimmed and usable.

use super::lifecycle::ClientStatus;
use super::refusal::Refusal;

/// The widths of the columns the fields land in (`clients`, and `users` for the admin), in
/// characters, as PostgreSQL counts them. Checked after trimming and upper-casing, which can
/// make a value longer than the schema's `maxLength` saw (`"ﬃ"` upper-cases to `"FFI"`): a
/// value too wide is refused here, not by the database on every retry.
pub const COLUMN_WIDTHS: [(&str, usize); 5] = [
    ("email", 255),
    ("client_alias", 255),
    ("client_type", 50),
    ("country_code", 3),
    ("phone", 20),
];

/// An email address that has at least the shape `local@domain` and no whitespace. Mailbox
/// existence is the welcome email's problem, not ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Option<Email> {
        let s = raw.trim();
        let (local, domain) = s.rsplit_once('@')?;
        let ok = !local.is_empty()
            && !domain.is_empty()
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !s.chars().any(|c| c.is_whitespace() || c.is_control());
        ok.then(|| Email(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The five contract fields as a command gives them (each may be missing).
#[derive(Debug, Clone, Copy, Default)]
pub struct ContactFields<'a> {
    pub email: Option<&'a str>,
    pub client_alias: Option<&'a str>,
    pub client_type: Option<&'a str>,
    pub country_code: Option<&'a str>,
    pub phone: Option<&'a str>,
}

/// A checked `client.create` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewClient {
    pub email: Email,
    pub client_alias: String,
    pub client_type: String,
    /// Upper-cased ISO 3166-1 alpha-2.
    pub country_code: String,
    pub phone: String,
    pub client_status: ClientStatus,
}

impl NewClient {
    /// The seed's rule: all five present and non-empty, else one refusal with one text.
    /// A malformed email gets the same answer: upstream clients know no other code for it.
    /// Then the country must be an ISO 3166-1 alpha-2 code (INVALID_COUNTRY) and the phone a
    /// number (INVALID_PHONE, stored in its canonical form: `domain::phone`).
    pub fn parse(given: ContactFields<'_>) -> Result<NewClient, Refusal> {
        let field = |value: Option<&str>| {
            value
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let (Some(email), Some(client_alias), Some(client_type), Some(country), Some(phone)) = (
            field(given.email),
            field(given.client_alias),
            field(given.client_type),
            field(given.country_code),
            field(given.phone),
        ) else {
            return Err(Refusal::validation_failed());
        };
        let email = Email::parse(&email).ok_or_else(Refusal::validation_failed)?;
        let country_code = country.to_uppercase();
        if !super::country::is_alpha2(&country_code) {
            return Err(Refusal::invalid_country());
        }
        let phone = super::phone::normalize("phone", &phone)?;
        let new = NewClient {
            email,
            client_alias,
            client_type: client_type.to_uppercase(),
            country_code,
            phone,
            // The schema admits PENDING or nothing: every other state is the lifecycle's.
            client_status: ClientStatus::Pending,
        };
        new.check_widths()?;
        Ok(new)
    }

    fn check_widths(&self) -> Result<(), Refusal> {
        let values = [
            self.email.as_str(),
            &self.client_alias,
            &self.client_type,
            &self.country_code,
            &self.phone,
        ];
        for ((field, width), value) in COLUMN_WIDTHS.into_iter().zip(values) {
            if value.chars().count() > width {
                return Err(Refusal::value_too_long(field, width));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn parse(body: &Value) -> Result<NewClient, Refusal> {
        let field = |k: &str| body.get(k).and_then(Value::as_str);
        NewClient::parse(ContactFields {
            email: field("email"),
            client_alias: field("client_alias"),
            client_type: field("client_type"),
            country_code: field("country_code"),
            phone: field("phone"),
        })
    }

    fn full() -> Value {
        json!({"email":" admin@company.com ","client_alias":"Tech Company Ltd","client_type":"corporate","country_code":"id","phone":"+628123456789"})
    }

    #[test]
    fn a_full_body_parses_trimmed_and_normalised() {
        let c = parse(&full()).unwrap();
        assert_eq!(c.email.as_str(), "admin@company.com");
        assert_eq!(c.country_code, "ID");
        assert_eq!(c.client_type, "CORPORATE");
        assert_eq!(c.client_status, ClientStatus::Pending);
    }

    #[test]
    fn each_missing_null_or_blank_field_is_validation_failed() {
        for name in [
            "email",
            "client_alias",
            "client_type",
            "country_code",
            "phone",
        ] {
            for broken in [None, Some(Value::Null), Some(json!("")), Some(json!("   "))] {
                let mut body = full();
                match &broken {
                    None => {
                        body.as_object_mut().unwrap().remove(name);
                    }
                    Some(v) => body[name] = v.clone(),
                }
                let err = parse(&body).unwrap_err();
                assert_eq!(err, Refusal::validation_failed(), "{name} = {broken:?}");
            }
        }
    }

    #[test]
    fn a_value_that_grows_past_its_column_when_upper_cased_is_refused() {
        let mut body = full();
        // 50 characters pass the schema; upper-cased they are 150.
        body["client_type"] = json!("\u{fb03}".repeat(50));
        let err = parse(&body).unwrap_err();
        assert_eq!(err.code, "VALUE_TOO_LONG");
        assert_eq!(err.message, "client_type must be at most 50 characters.");
        body["client_type"] = json!("x".repeat(50));
        assert!(parse(&body).is_ok());
        // A country code that grows is no ISO code either.
        body["country_code"] = json!("\u{df}\u{df}g");
        assert_eq!(parse(&body).unwrap_err().code, "INVALID_COUNTRY");
    }

    #[test]
    fn the_country_must_be_iso_alpha2_and_the_phone_is_stored_canonical() {
        let mut body = full();
        for bad in ["XX", "ZZ", "IDN", "U1"] {
            body["country_code"] = json!(bad);
            assert_eq!(
                parse(&body).unwrap_err(),
                Refusal::invalid_country(),
                "{bad}"
            );
        }
        body["country_code"] = json!("sg");
        body["phone"] = json!("+62 812-3456-7890");
        let new = parse(&body).unwrap();
        assert_eq!(
            (new.country_code.as_str(), new.phone.as_str()),
            ("SG", "+6281234567890")
        );
        body["phone"] = json!("call me");
        assert_eq!(parse(&body).unwrap_err().code, "INVALID_PHONE");
    }

    #[test]
    fn emails_need_a_local_part_and_a_domain() {
        assert!(Email::parse("a@b").is_some());
        for bad in ["ab", "@b", "a@", "a b@c", "a@.b", "a@b."] {
            assert!(Email::parse(bad).is_none(), "{bad}");
        }
    }
}
