//! The Customer object of Xendit's Customers API (`api-version: 2020-10-31`): the request we send,
//! the customer we get back, and plain builders from our own onboarding data.
//!
//! Shapes and limits follow Xendit's API reference for `POST /customers`: `reference_id` 1..=255
//! chars, `given_names` and `business_name` 1..=50 chars, `business_type` one of seven legal
//! entity types, the business's country in `business_detail.business_domicile`.

use serde::{Deserialize, Serialize};

/// Longest `individual_detail.given_names` and `business_detail.business_name` Xendit accepts,
/// in characters.
pub const MAX_NAME_CHARS: usize = 50;

/// Country every customer we create belongs to: the platform uses Xendit only for Indonesian
/// clients (PSP `XENDIT` is the FIAT PSP of `ID`), so the country is a fact, not an input.
pub const XENDIT_COUNTRY: &str = "ID";

/// Whether a customer is a person or an organisation. Xendit's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CustomerType {
    /// A person: our client's admin user.
    Individual,
    /// An organisation: our client.
    Business,
}

/// Legal entity type of a business, Xendit's `business_detail.business_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BusinessType {
    /// A company with its own legal personality (PT, Ltd, Inc).
    Corporation,
    /// One person trading under their own name.
    SoleProprietor,
    /// Two or more owners sharing liability.
    Partnership,
    /// A member-owned cooperative (koperasi).
    Cooperative,
    /// A trust.
    Trust,
    /// A foundation, association or NGO (yayasan, perkumpulan).
    NonProfit,
    /// A government body.
    Government,
}

impl BusinessType {
    /// Maps our `client_type` to Xendit's legal entity type. Case, surrounding spaces, and `-` or
    /// spaces between words do not matter.
    ///
    /// | our `client_type` | Xendit `business_type` |
    /// | --- | --- |
    /// | `CORPORATE`, `CORPORATION`, `STARTUP` | `CORPORATION` |
    /// | `SOLE_PROPRIETOR`, `SOLE_PROPRIETORSHIP`, `INDIVIDUAL` | `SOLE_PROPRIETOR` |
    /// | `PARTNERSHIP` | `PARTNERSHIP` |
    /// | `COOPERATIVE` | `COOPERATIVE` |
    /// | `TRUST` | `TRUST` |
    /// | `NON_PROFIT`, `NONPROFIT`, `NGO` | `NON_PROFIT` |
    /// | `GOVERNMENT` | `GOVERNMENT` |
    /// | anything else | `CORPORATION` |
    ///
    /// Unknown types fall back to `CORPORATION` rather than failing: most clients are companies,
    /// and a wrong guess is corrected in Xendit's KYC review, while a refusal would leave the
    /// client with no customer at all.
    pub fn from_client_type(client_type: &str) -> Self {
        let normalised = client_type
            .trim()
            .to_ascii_uppercase()
            .replace(['-', ' '], "_");
        match normalised.as_str() {
            "SOLE_PROPRIETOR" | "SOLE_PROPRIETORSHIP" | "INDIVIDUAL" => {
                BusinessType::SoleProprietor
            }
            "PARTNERSHIP" => BusinessType::Partnership,
            "COOPERATIVE" => BusinessType::Cooperative,
            "TRUST" => BusinessType::Trust,
            "NON_PROFIT" | "NONPROFIT" | "NGO" => BusinessType::NonProfit,
            "GOVERNMENT" => BusinessType::Government,
            // CORPORATE, CORPORATION, STARTUP and everything unknown.
            _ => BusinessType::Corporation,
        }
    }
}

/// What we know about a client when we create its BUSINESS customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessInput {
    /// The client's organisation name; becomes `business_detail.business_name`.
    pub client_alias: String,
    /// Our client type (`CORPORATE`, `STARTUP`, ...); mapped by [`BusinessType::from_client_type`].
    pub client_type: String,
    /// Contact email of the client.
    pub email: String,
    /// Contact phone, ideally E.164 (`+628123456789`).
    pub phone: String,
}

/// What we know about an admin user when we create their INDIVIDUAL customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndividualInput {
    /// The admin's name; becomes `individual_detail.given_names`.
    pub given_names: String,
    /// The admin's email.
    pub email: String,
    /// The admin's phone, ideally E.164.
    pub phone: String,
}

/// `individual_detail` of a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndividualDetail {
    /// First name(s), 1..=50 chars.
    pub given_names: String,
    /// Family name; we never know it apart from the given names, so we never send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surname: Option<String>,
}

/// `business_detail` of a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusinessDetail {
    /// Registered name, 1..=50 chars.
    pub business_name: String,
    /// Legal entity type; optional in Xendit's answers, always sent by us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_type: Option<BusinessType>,
    /// Registered country of the business, ISO 3166-1 alpha-2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_domicile: Option<String>,
}

/// Body of `POST /customers`. Build it with [`CustomerRequest::business`] or
/// [`CustomerRequest::individual`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomerRequest {
    /// Our own id for the customer, unique per Xendit account; see [`super::ids::reference_id`].
    pub reference_id: String,
    /// INDIVIDUAL or BUSINESS; decides which detail object Xendit requires.
    #[serde(rename = "type")]
    pub customer_type: CustomerType,
    /// Required when `type` is INDIVIDUAL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub individual_detail: Option<IndividualDetail>,
    /// Required when `type` is BUSINESS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub business_detail: Option<BusinessDetail>,
    /// Contact email; left out when we have none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Contact mobile number; left out when we have none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mobile_number: Option<String>,
}

impl CustomerRequest {
    /// The BUSINESS customer for one of our clients: `business_name` from `client_alias`
    /// (trimmed, at most 50 chars), `business_type` mapped from `client_type`,
    /// `business_domicile` [`XENDIT_COUNTRY`].
    pub fn business(reference_id: impl Into<String>, input: BusinessInput) -> Self {
        CustomerRequest {
            reference_id: reference_id.into(),
            customer_type: CustomerType::Business,
            individual_detail: None,
            business_detail: Some(BusinessDetail {
                business_name: fit_name(&input.client_alias),
                business_type: Some(BusinessType::from_client_type(&input.client_type)),
                business_domicile: Some(XENDIT_COUNTRY.to_owned()),
            }),
            email: contact_email(&input.email),
            mobile_number: mobile_number(&input.phone),
        }
    }

    /// The INDIVIDUAL customer for a client's admin user: `given_names` reduced to what Xendit
    /// accepts (see [`given_names`]), at most 50 chars.
    pub fn individual(reference_id: impl Into<String>, input: IndividualInput) -> Self {
        CustomerRequest {
            reference_id: reference_id.into(),
            customer_type: CustomerType::Individual,
            individual_detail: Some(IndividualDetail {
                given_names: given_names(&input.given_names),
                surname: None,
            }),
            business_detail: None,
            email: contact_email(&input.email),
            mobile_number: mobile_number(&input.phone),
        }
    }
}

/// A customer as Xendit returns it, read as tolerantly as Xendit's own SDKs read it: only `id`,
/// `reference_id` and `type` are required; every other field may be missing or `null`, a
/// `business_type` this code does not know is kept as text, and fields we do not use
/// (addresses, KYC documents, metadata, ...) are ignored, so new or sparse answers never turn
/// a customer that exists at Xendit into a failure here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// Xendit's id, `cust-<uuid>`; what the rest of Xendit's API refers to.
    pub id: String,
    /// The `reference_id` we sent.
    pub reference_id: String,
    /// `INDIVIDUAL` or `BUSINESS` (text: see [`Customer::kind`]).
    #[serde(rename = "type")]
    pub customer_type: String,
    #[serde(default)]
    pub individual_detail: Option<IndividualAnswer>,
    #[serde(default)]
    pub business_detail: Option<BusinessAnswer>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub mobile_number: Option<String>,
    /// When Xendit created the customer (RFC 3339), when it says.
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub updated: Option<String>,
}

impl Customer {
    /// The customer's type, when it is one this code knows.
    pub fn kind(&self) -> Option<CustomerType> {
        serde_json::from_value(serde_json::Value::String(self.customer_type.clone())).ok()
    }
}

/// `individual_detail` as Xendit answers it: every field optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndividualAnswer {
    #[serde(default)]
    pub given_names: Option<String>,
    #[serde(default)]
    pub surname: Option<String>,
}

/// `business_detail` as Xendit answers it: every field optional, the type as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusinessAnswer {
    #[serde(default)]
    pub business_name: Option<String>,
    /// One of [`BusinessType`]'s values today; kept as text so a new one reads.
    #[serde(default)]
    pub business_type: Option<String>,
    #[serde(default)]
    pub business_domicile: Option<String>,
}

/// Trims a name and cuts it to Xendit's limit, counting chars rather than bytes so an
/// Indonesian or accented name is never split inside a character.
fn fit_name(name: &str) -> String {
    let cut: String = name.trim().chars().take(MAX_NAME_CHARS).collect();
    // The cut may land just after a space; Xendit would keep it as part of the name.
    cut.trim_end().to_owned()
}

fn non_empty(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// Xendit refuses an email longer than [`MAX_EMAIL_CHARS`] with a permanent validation error,
/// which would cost the client its Xendit customer. The email is optional there (we hold it
/// ourselves), so a longer one is left out rather than cut into a different address.
fn contact_email(email: &str) -> Option<String> {
    non_empty(email).filter(|e| e.chars().count() <= MAX_EMAIL_CHARS)
}

/// Xendit's documented limit on `email`.
pub const MAX_EMAIL_CHARS: usize = 50;

/// What `individual_detail.given_names` falls back to when a name has nothing Xendit accepts.
pub const GIVEN_NAMES_FALLBACK: &str = "Customer";

/// `given_names` as Xendit's validation takes them: letters (any script), digits and single
/// spaces (`PT. Maju & Co.` becomes `PT Maju Co`), at most 50 characters; when nothing is left,
/// [`GIVEN_NAMES_FALLBACK`] rather than a customer refused for good.
pub fn given_names(name: &str) -> String {
    let kept: String = name
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    let words: Vec<&str> = kept.split_whitespace().collect();
    let fitted = fit_name(&words.join(" "));
    if fitted.is_empty() {
        GIVEN_NAMES_FALLBACK.to_owned()
    } else {
        fitted
    }
}

/// Xendit validates `mobile_number` as E.164 (`+` and 8 to 15 digits). Our phones are stored
/// canonical (`domain::phone`); one written with its country code goes as it is, a local one
/// (`0812...`) is left out rather than guessed into a country (a guess could route an SMS to a
/// stranger) or sent to be refused, which would cost the client its customer.
fn mobile_number(phone: &str) -> Option<String> {
    let canonical = crate::domain::phone::normalize("phone", phone).ok()?;
    crate::domain::phone::e164(&canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn business_input() -> BusinessInput {
        BusinessInput {
            client_alias: "Tech Company Ltd".into(),
            client_type: "CORPORATE".into(),
            email: "admin@company.com".into(),
            phone: "+628123456789".into(),
        }
    }

    #[test]
    fn an_email_over_xendits_limit_is_left_out_not_cut() {
        let long = format!("{}@example.com", "a".repeat(40));
        assert!(long.chars().count() > MAX_EMAIL_CHARS);
        let mut input = business_input();
        input.email = long.clone();
        assert_eq!(CustomerRequest::business("r", input).email, None);
        let fits = format!("{}@example.com", "a".repeat(38));
        assert_eq!(fits.chars().count(), MAX_EMAIL_CHARS);
        let individual = CustomerRequest::individual(
            "r",
            IndividualInput {
                given_names: "A".into(),
                email: fits.clone(),
                phone: String::new(),
            },
        );
        assert_eq!(individual.email, Some(fits));
    }

    #[test]
    fn business_request_has_xendits_shape() {
        let request = CustomerRequest::business("onboard-client-1", business_input());
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({
                "reference_id": "onboard-client-1",
                "type": "BUSINESS",
                "business_detail": {
                    "business_name": "Tech Company Ltd",
                    "business_type": "CORPORATION",
                    "business_domicile": "ID"
                },
                "email": "admin@company.com",
                "mobile_number": "+628123456789"
            })
        );
    }

    #[test]
    fn individual_request_has_xendits_shape() {
        let request = CustomerRequest::individual(
            "onboard-user-7",
            IndividualInput {
                given_names: "Tech Company Ltd".into(),
                email: "admin@company.com".into(),
                phone: "+628123456789".into(),
            },
        );
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({
                "reference_id": "onboard-user-7",
                "type": "INDIVIDUAL",
                "individual_detail": { "given_names": "Tech Company Ltd" },
                "email": "admin@company.com",
                "mobile_number": "+628123456789"
            })
        );
    }

    #[test]
    fn client_types_map_to_xendit_legal_entity_types() {
        for (ours, theirs) in [
            ("CORPORATE", "CORPORATION"),
            ("STARTUP", "CORPORATION"),
            ("corporation", "CORPORATION"),
            ("SOLE_PROPRIETOR", "SOLE_PROPRIETOR"),
            ("sole proprietorship", "SOLE_PROPRIETOR"),
            ("INDIVIDUAL", "SOLE_PROPRIETOR"),
            ("PARTNERSHIP", "PARTNERSHIP"),
            (" cooperative ", "COOPERATIVE"),
            ("TRUST", "TRUST"),
            ("NON_PROFIT", "NON_PROFIT"),
            ("non-profit", "NON_PROFIT"),
            ("NGO", "NON_PROFIT"),
            ("GOVERNMENT", "GOVERNMENT"),
            ("SOMETHING_NEW", "CORPORATION"),
            ("", "CORPORATION"),
        ] {
            let mapped = serde_json::to_value(BusinessType::from_client_type(ours)).unwrap();
            assert_eq!(mapped, json!(theirs), "client_type {ours:?}");
        }
    }

    #[test]
    fn names_are_trimmed() {
        let request = CustomerRequest::business(
            "r",
            BusinessInput {
                client_alias: "  \tTech Company Ltd \n".into(),
                ..business_input()
            },
        );
        assert_eq!(
            request.business_detail.unwrap().business_name,
            "Tech Company Ltd"
        );
    }

    #[test]
    fn long_names_are_cut_to_50_chars_not_bytes() {
        // 60 two-byte chars: a byte cut at 50 would split a char and panic or corrupt it.
        let name = "é".repeat(60);
        let request = CustomerRequest::individual(
            "r",
            IndividualInput {
                given_names: name,
                email: String::new(),
                phone: String::new(),
            },
        );
        let given = request.individual_detail.unwrap().given_names;
        assert_eq!(given.chars().count(), MAX_NAME_CHARS);
        assert_eq!(given, "é".repeat(50));
    }

    #[test]
    fn a_cut_never_leaves_a_trailing_space() {
        let name = format!("{} Tail", "A".repeat(49));
        assert_eq!(fit_name(&name), "A".repeat(49));
    }

    #[test]
    fn phones_go_in_e164_or_not_at_all() {
        assert_eq!(
            mobile_number(" +62 812-3456-7890 "),
            Some("+6281234567890".into())
        );
        assert_eq!(mobile_number("08123456789"), None, "never guessed");
        assert_eq!(mobile_number("+1234"), None);
        assert_eq!(mobile_number("   "), None);
    }

    #[test]
    fn given_names_keep_letters_digits_and_single_spaces() {
        assert_eq!(given_names("PT. Maju & Co."), "PT Maju Co");
        assert_eq!(given_names("  Siti   Nur-Aisyah 2 "), "Siti Nur Aisyah 2");
        assert_eq!(given_names("Łukasz Żółć"), "Łukasz Żółć");
        assert_eq!(given_names("&&& ..."), GIVEN_NAMES_FALLBACK);
        assert_eq!(given_names(""), GIVEN_NAMES_FALLBACK);
        assert_eq!(given_names(&"ab ".repeat(30)).chars().count(), 50);
    }

    #[test]
    fn a_sparse_answer_or_an_unknown_business_type_still_reads() {
        let sparse = json!({
            "id": "cust-1", "reference_id": "r", "type": "INDIVIDUAL",
            "individual_detail": {"given_names": null}
        });
        let customer: Customer = serde_json::from_value(sparse).unwrap();
        assert_eq!(customer.kind(), Some(CustomerType::Individual));
        assert_eq!(customer.individual_detail.unwrap().given_names, None);
        let unknown = json!({
            "id": "cust-2", "reference_id": "r", "type": "BUSINESS",
            "business_detail": {"business_name": "X", "business_type": "LIMITED_LIABILITY_COMPANY"},
            "created": null
        });
        let customer: Customer = serde_json::from_value(unknown).unwrap();
        assert_eq!(
            customer.business_detail.unwrap().business_type.as_deref(),
            Some("LIMITED_LIABILITY_COMPANY")
        );
        assert!(
            serde_json::from_value::<Customer>(json!({"id": "c", "type": "BUSINESS"})).is_err()
        );
    }

    #[test]
    fn empty_contact_fields_are_left_out() {
        let request = CustomerRequest::business(
            "r",
            BusinessInput {
                email: " ".into(),
                phone: String::new(),
                ..business_input()
            },
        );
        let body = serde_json::to_value(&request).unwrap();
        assert!(body.get("email").is_none(), "{body}");
        assert!(body.get("mobile_number").is_none(), "{body}");
    }

    #[test]
    fn customer_reads_xendits_documented_answer_and_ignores_extra_fields() {
        // The business example of Xendit's "Create customer" reference, 2020-10-31.
        let answer = json!({
            "id": "cust-239c16f4-866d-43e8-9341-7badafbc019f",
            "reference_id": "demo_1475801962607",
            "type": "BUSINESS",
            "business_detail": {
                "business_name": "ACME Corp",
                "trading_name": null,
                "business_type": "CORPORATION",
                "nature_of_business": null,
                "business_domicile": null,
                "date_of_registration": null
            },
            "email": "customer@website.com",
            "mobile_number": null,
            "phone_number": null,
            "hashed_phone_number": null,
            "addresses": [],
            "kyc_documents": [],
            "description": null,
            "date_of_registration": "2020-03-30",
            "domicile_of_registration": "ID",
            "metadata": {},
            "created": "2020-03-30T06:12:47.212Z",
            "updated": "2020-03-30T06:12:47.212Z"
        });
        let customer: Customer = serde_json::from_value(answer).unwrap();
        assert_eq!(customer.id, "cust-239c16f4-866d-43e8-9341-7badafbc019f");
        assert_eq!(customer.kind(), Some(CustomerType::Business));
        assert_eq!(customer.email.as_deref(), Some("customer@website.com"));
        assert_eq!(customer.mobile_number, None);
        assert_eq!(
            customer.business_detail.unwrap().business_type.as_deref(),
            Some("CORPORATION")
        );
        assert_eq!(
            customer.created.as_deref(),
            Some("2020-03-30T06:12:47.212Z")
        );
    }
}
