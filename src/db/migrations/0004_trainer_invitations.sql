-- A trainer-client link needs the client's consent (issue 15): a trainer invites, the
-- client accepts (or an admin assigns directly). One pending invitation per pair.
CREATE TABLE trainer_invitations (
    client_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    trainer_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at TEXT    NOT NULL,
    PRIMARY KEY (client_id, trainer_id)
);
CREATE INDEX trainer_invitations_trainer ON trainer_invitations(trainer_id);
