-- Accounts. Roles are upper-case as in the original API's JSON.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    email         TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    full_name     TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('ADMIN', 'TRAINER', 'CLIENT')),
    is_active     INTEGER NOT NULL DEFAULT 1,
    trainer_id    INTEGER REFERENCES users(id) ON DELETE SET NULL,
    -- Bumped on password change so every token issued before it stops working.
    token_version INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT    NOT NULL,
    updated_at    TEXT,
    last_login    TEXT
);
CREATE INDEX users_role ON users(role);
CREATE INDEX users_trainer ON users(trainer_id);
