-- Issue 12: the deployment's secret key. The workers sign their own steering headers with it
-- (x-onboard-attempt), so a header an outside publisher sets is not believed, and derive each
-- saga's first-access secret from it, so a worker taking a saga over sends the same link. One
-- row, made here at random; every worker reads it at start. It never leaves the database.
CREATE TABLE header_key (
    id  SMALLINT PRIMARY KEY CHECK (id = 1),
    key BYTEA    NOT NULL
);
INSERT INTO header_key (id, key)
VALUES (1, uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()));
