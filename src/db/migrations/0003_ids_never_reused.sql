-- Ids are never reused (issue 15). Without AUTOINCREMENT, SQLite hands the id of the
-- newest deleted row to the next insert, so a token, a link or a cached reference to a
-- deleted user could name the next user who signs up. Every table with an `id` key is
-- rebuilt in place with AUTOINCREMENT, keeping its rows (the SQLite "12-step" rebuild:
-- the runner turns foreign keys off for this migration and checks them before commit).
--
-- `users.token_version` (a counter that restarted at 0 for a reused id) becomes
-- `token_epoch`, a random number drawn per user at insert and again on a password change
-- or a logout from every device; a token carries the epoch it was issued under. Every
-- user gets a fresh epoch here, so tokens issued before this migration stop working once.

CREATE TABLE users_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    email         TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    full_name     TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('ADMIN', 'TRAINER', 'CLIENT')),
    is_active     INTEGER NOT NULL DEFAULT 1,
    trainer_id    INTEGER REFERENCES users(id) ON DELETE SET NULL,
    token_epoch   INTEGER NOT NULL DEFAULT (random()),
    created_at    TEXT    NOT NULL,
    updated_at    TEXT,
    last_login    TEXT
);
INSERT INTO users_new (id, username, email, full_name, password_hash, role, is_active, trainer_id, token_epoch, created_at, updated_at, last_login)
SELECT id, username, email, full_name, password_hash, role, is_active, trainer_id, random(), created_at, updated_at, last_login FROM users;
DROP TABLE users;
ALTER TABLE users_new RENAME TO users;
CREATE INDEX users_role ON users(role);
CREATE INDEX users_trainer ON users(trainer_id);

CREATE TABLE exercises_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             TEXT NOT NULL,
    description      TEXT,
    video_url        TEXT,
    muscle_group     TEXT NOT NULL,
    equipment_needed TEXT,
    instructions     TEXT,
    created_by       INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT
);
INSERT INTO exercises_new (id, name, description, video_url, muscle_group, equipment_needed, instructions, created_by, created_at, updated_at)
SELECT id, name, description, video_url, muscle_group, equipment_needed, instructions, created_by, created_at, updated_at FROM exercises;
DROP TABLE exercises;
ALTER TABLE exercises_new RENAME TO exercises;
CREATE INDEX exercises_muscle ON exercises(muscle_group);

CREATE TABLE workout_plans_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    trainer_id  INTEGER REFERENCES users(id) ON DELETE SET NULL,
    client_id   INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    description TEXT,
    start_date  TEXT,
    end_date    TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT
);
INSERT INTO workout_plans_new (id, trainer_id, client_id, name, description, start_date, end_date, created_at, updated_at)
SELECT id, trainer_id, client_id, name, description, start_date, end_date, created_at, updated_at FROM workout_plans;
DROP TABLE workout_plans;
ALTER TABLE workout_plans_new RENAME TO workout_plans;
CREATE INDEX workout_plans_client ON workout_plans(client_id);
CREATE INDEX workout_plans_trainer ON workout_plans(trainer_id);

CREATE TABLE workout_sessions_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    workout_plan_id INTEGER NOT NULL REFERENCES workout_plans(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    day_of_week     INTEGER CHECK (day_of_week BETWEEN 0 AND 6),
    notes           TEXT,
    created_at      TEXT NOT NULL
);
INSERT INTO workout_sessions_new (id, workout_plan_id, name, day_of_week, notes, created_at)
SELECT id, workout_plan_id, name, day_of_week, notes, created_at FROM workout_sessions;
DROP TABLE workout_sessions;
ALTER TABLE workout_sessions_new RENAME TO workout_sessions;
CREATE INDEX workout_sessions_plan ON workout_sessions(workout_plan_id);

CREATE TABLE workout_exercises_new (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    workout_session_id INTEGER NOT NULL REFERENCES workout_sessions(id) ON DELETE CASCADE,
    exercise_id        INTEGER NOT NULL REFERENCES exercises(id) ON DELETE RESTRICT,
    order_index        INTEGER NOT NULL,
    sets               INTEGER,
    reps               TEXT,
    weight             REAL,
    rest_time          INTEGER,
    notes              TEXT
);
INSERT INTO workout_exercises_new (id, workout_session_id, exercise_id, order_index, sets, reps, weight, rest_time, notes)
SELECT id, workout_session_id, exercise_id, order_index, sets, reps, weight, rest_time, notes FROM workout_exercises;
DROP TABLE workout_exercises;
ALTER TABLE workout_exercises_new RENAME TO workout_exercises;
CREATE INDEX workout_exercises_session ON workout_exercises(workout_session_id);
CREATE INDEX workout_exercises_exercise ON workout_exercises(exercise_id);

CREATE TABLE exercise_completions_new (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    workout_exercise_id INTEGER NOT NULL REFERENCES workout_exercises(id) ON DELETE CASCADE,
    client_id           INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    actual_sets         INTEGER,
    actual_reps         TEXT,
    weight_used         REAL,
    difficulty_rating   INTEGER CHECK (difficulty_rating BETWEEN 1 AND 5),
    notes               TEXT,
    form_photo_path     TEXT,
    completed_at        TEXT NOT NULL
);
INSERT INTO exercise_completions_new (id, workout_exercise_id, client_id, actual_sets, actual_reps, weight_used, difficulty_rating, notes, form_photo_path, completed_at)
SELECT id, workout_exercise_id, client_id, actual_sets, actual_reps, weight_used, difficulty_rating, notes, form_photo_path, completed_at FROM exercise_completions;
DROP TABLE exercise_completions;
ALTER TABLE exercise_completions_new RENAME TO exercise_completions;
CREATE INDEX completions_exercise ON exercise_completions(workout_exercise_id);
CREATE INDEX completions_client ON exercise_completions(client_id, completed_at);

CREATE TABLE weight_entries_new (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    date       TEXT NOT NULL,
    weight     REAL NOT NULL CHECK (weight > 0),
    photo_path TEXT,
    notes      TEXT,
    created_at TEXT NOT NULL
);
INSERT INTO weight_entries_new (id, client_id, date, weight, photo_path, notes, created_at)
SELECT id, client_id, date, weight, photo_path, notes, created_at FROM weight_entries;
DROP TABLE weight_entries;
ALTER TABLE weight_entries_new RENAME TO weight_entries;
CREATE INDEX weight_entries_client ON weight_entries(client_id, date);

CREATE TABLE notifications_new (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    sender_id    INTEGER REFERENCES users(id) ON DELETE SET NULL,
    title        TEXT NOT NULL,
    message      TEXT NOT NULL,
    type         TEXT NOT NULL,
    is_read      INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL,
    read_at      TEXT
);
INSERT INTO notifications_new (id, recipient_id, sender_id, title, message, type, is_read, created_at, read_at)
SELECT id, recipient_id, sender_id, title, message, type, is_read, created_at, read_at FROM notifications;
DROP TABLE notifications;
ALTER TABLE notifications_new RENAME TO notifications;
CREATE INDEX notifications_recipient ON notifications(recipient_id, is_read, id);

CREATE TABLE meal_plans_new (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    trainer_id     INTEGER REFERENCES users(id) ON DELETE SET NULL,
    date           TEXT NOT NULL,
    title          TEXT NOT NULL,
    total_calories INTEGER,
    protein_target INTEGER,
    carb_target    INTEGER,
    fat_target     INTEGER,
    notes          TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT
);
INSERT INTO meal_plans_new (id, client_id, trainer_id, date, title, total_calories, protein_target, carb_target, fat_target, notes, created_at, updated_at)
SELECT id, client_id, trainer_id, date, title, total_calories, protein_target, carb_target, fat_target, notes, created_at, updated_at FROM meal_plans;
DROP TABLE meal_plans;
ALTER TABLE meal_plans_new RENAME TO meal_plans;
CREATE INDEX meal_plans_client ON meal_plans(client_id, date);

CREATE TABLE meal_entries_new (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    meal_plan_id INTEGER NOT NULL REFERENCES meal_plans(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    order_index  INTEGER NOT NULL,
    notes        TEXT
);
INSERT INTO meal_entries_new (id, meal_plan_id, name, order_index, notes)
SELECT id, meal_plan_id, name, order_index, notes FROM meal_entries;
DROP TABLE meal_entries;
ALTER TABLE meal_entries_new RENAME TO meal_entries;
CREATE INDEX meal_entries_plan ON meal_entries(meal_plan_id);

CREATE TABLE meal_components_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    meal_entry_id INTEGER NOT NULL REFERENCES meal_entries(id) ON DELETE CASCADE,
    type          TEXT NOT NULL,
    description   TEXT NOT NULL,
    calories      INTEGER,
    protein       REAL,
    carbs         REAL,
    fat           REAL,
    is_optional   INTEGER NOT NULL DEFAULT 0
);
INSERT INTO meal_components_new (id, meal_entry_id, type, description, calories, protein, carbs, fat, is_optional)
SELECT id, meal_entry_id, type, description, calories, protein, carbs, fat, is_optional FROM meal_components;
DROP TABLE meal_components;
ALTER TABLE meal_components_new RENAME TO meal_components;
CREATE INDEX meal_components_entry ON meal_components(meal_entry_id);

CREATE TABLE meal_uploads_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    meal_entry_id   INTEGER NOT NULL REFERENCES meal_entries(id) ON DELETE CASCADE,
    client_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    image_path      TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'approved', 'rejected')),
    trainer_comment TEXT,
    reviewed_by     INTEGER REFERENCES users(id) ON DELETE SET NULL,
    uploaded_at     TEXT NOT NULL,
    reviewed_at     TEXT
);
INSERT INTO meal_uploads_new (id, meal_entry_id, client_id, image_path, status, trainer_comment, reviewed_by, uploaded_at, reviewed_at)
SELECT id, meal_entry_id, client_id, image_path, status, trainer_comment, reviewed_by, uploaded_at, reviewed_at FROM meal_uploads;
DROP TABLE meal_uploads;
ALTER TABLE meal_uploads_new RENAME TO meal_uploads;
CREATE INDEX meal_uploads_entry ON meal_uploads(meal_entry_id);

CREATE TABLE files_new (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL,
    name         TEXT NOT NULL,
    owner_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    content_type TEXT NOT NULL,
    size         INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    UNIQUE (kind, name)
);
INSERT INTO files_new (id, kind, name, owner_id, content_type, size, created_at)
SELECT id, kind, name, owner_id, content_type, size, created_at FROM files;
DROP TABLE files;
ALTER TABLE files_new RENAME TO files;
CREATE INDEX files_owner ON files(owner_id);
