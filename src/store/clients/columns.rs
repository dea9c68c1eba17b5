//! The columns a client is read with, partners joined.

/// A client row as `Client` reads it: the client's own columns (alias `c`) and its partners
/// joined in (`dp` its direct partner, `rp` the root of that partner's tree).
pub(super) const CLIENT_COLUMNS: &str = "c.client_id, c.client_code, c.email, c.client_alias, c.client_type, \
     c.client_status, c.ekyc_status, c.country_code, c.psp_id, c.phone, c.external_id, c.metadata, \
     c.identity, c.address, c.full_name, c.description, c.contact, \
     CASE WHEN rp.partner_id IS NULL THEN NULL ELSE jsonb_build_object('id', rp.partner_id, 'name', rp.name) END AS partner, \
     CASE WHEN dp.partner_id IS NULL THEN NULL ELSE jsonb_build_object('id', dp.partner_id, 'name', dp.name) END AS direct_partner, \
     c.is_active, c.version, c.deleted_at, c.created, c.updated";

/// The partners a client row `c` is read with.
pub(super) const PARTNER_JOINS: &str =
    "LEFT JOIN partners dp ON dp.partner_id = c.direct_partner_id
         LEFT JOIN partners rp ON rp.partner_id = dp.root_partner_id";

/// `SELECT` of [`CLIENT_COLUMNS`] from `source` (a table or a CTE), aliased `c`, with the
/// partners joined.
pub(super) fn select_from(source: &str) -> String {
    format!("SELECT {CLIENT_COLUMNS} FROM {source} c {PARTNER_JOINS}")
}
