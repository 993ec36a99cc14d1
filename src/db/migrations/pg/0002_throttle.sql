-- Throttling state shared by every replica (issue 16): failed logins and registrations
-- counted per key ("account:7", "addr:203.0.113.5", ...), and the keys locked until a
-- time (milliseconds since the epoch, by the database's clock).
CREATE TABLE throttle_events (
    key   TEXT COLLATE "C" NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX throttle_events_key ON throttle_events(key, at_ms);
CREATE TABLE throttle_locks (
    key      TEXT COLLATE "C" PRIMARY KEY,
    until_ms BIGINT NOT NULL
);
