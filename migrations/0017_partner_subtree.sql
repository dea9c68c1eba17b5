-- A partner and every partner below it, at any depth: what `client.list {partner}` and
-- `partner.list {under}` select from. One definition instead of a recursive query written
-- into each of them.
CREATE FUNCTION partner_subtree(root INTEGER) RETURNS SETOF INTEGER
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE tree AS (
        SELECT partner_id FROM partners WHERE partner_id = root
        UNION
        SELECT p.partner_id FROM partners p JOIN tree t ON p.parent_partner_id = t.partner_id
    )
    SELECT partner_id FROM tree
$$;
