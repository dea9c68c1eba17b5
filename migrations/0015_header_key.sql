-- Issue 12: the key the workers sign their own steering headers with (x-onboard-attempt), so
-- a header an outside publisher sets is not believed. One row, made here at random; every
-- worker of the deployment reads it at start. It never leaves the database.
CREATE TABLE header_key (
    id  SMALLINT PRIMARY KEY CHECK (id = 1),
    key BYTEA    NOT NULL
);
INSERT INTO header_key (id, key)
VALUES (1, uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()));
