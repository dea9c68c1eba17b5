-- Related people of a corporate client (directors, shareholders, ...), DESIGN.md "Relations,
-- imports and webhooks". Their own table: a client has any number, each with its own id, and
-- they are listed, patched and removed one by one. Removing one deletes its row (the seed's
-- DELETE); the event announcing it carries what it was.
CREATE TABLE client_relations (
    relation_id UUID PRIMARY KEY,
    -- The order relations were added in (several added at once share a timestamp).
    position BIGINT GENERATED ALWAYS AS IDENTITY,
    client_id INTEGER NOT NULL REFERENCES clients (client_id),
    relation TEXT NOT NULL
        CHECK (relation IN ('director', 'shareholder', 'director-and-shareholder', 'authorized-person')),
    identity JSONB NOT NULL,
    profile JSONB NOT NULL,
    created TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A client's relations in the order they were added, paged.
CREATE INDEX client_relations_by_client ON client_relations (client_id, position);
