-- The Elior Fitness domain: profiles, workouts, meal plans, progress, notifications and
-- uploaded files. Client-owned rows cascade when the client goes; a trainer's plans keep
-- their client and lose the trainer; an exercise used by a plan cannot be deleted.
CREATE TABLE trainer_profiles (
    user_id             INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    specialization      TEXT,
    bio                 TEXT,
    years_of_experience INTEGER,
    certification       TEXT,
    updated_at          TEXT
);
CREATE TABLE client_profiles (
    user_id              INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    height               REAL,
    target_weight        REAL,
    goals                TEXT,
    medical_conditions   TEXT,
    dietary_restrictions TEXT,
    updated_at           TEXT
);

CREATE TABLE exercises (
    id               INTEGER PRIMARY KEY,
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
CREATE INDEX exercises_muscle ON exercises(muscle_group);

CREATE TABLE workout_plans (
    id          INTEGER PRIMARY KEY,
    trainer_id  INTEGER REFERENCES users(id) ON DELETE SET NULL,
    client_id   INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    description TEXT,
    start_date  TEXT,
    end_date    TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT
);
CREATE INDEX workout_plans_client ON workout_plans(client_id);
CREATE INDEX workout_plans_trainer ON workout_plans(trainer_id);

CREATE TABLE workout_sessions (
    id              INTEGER PRIMARY KEY,
    workout_plan_id INTEGER NOT NULL REFERENCES workout_plans(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    day_of_week     INTEGER CHECK (day_of_week BETWEEN 0 AND 6),
    notes           TEXT,
    created_at      TEXT NOT NULL
);
CREATE INDEX workout_sessions_plan ON workout_sessions(workout_plan_id);

CREATE TABLE workout_exercises (
    id                 INTEGER PRIMARY KEY,
    workout_session_id INTEGER NOT NULL REFERENCES workout_sessions(id) ON DELETE CASCADE,
    exercise_id        INTEGER NOT NULL REFERENCES exercises(id) ON DELETE RESTRICT,
    order_index        INTEGER NOT NULL,
    sets               INTEGER,
    reps               TEXT,
    weight             REAL,
    rest_time          INTEGER,
    notes              TEXT
);
CREATE INDEX workout_exercises_session ON workout_exercises(workout_session_id);
CREATE INDEX workout_exercises_exercise ON workout_exercises(exercise_id);

CREATE TABLE exercise_completions (
    id                  INTEGER PRIMARY KEY,
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
CREATE INDEX completions_exercise ON exercise_completions(workout_exercise_id);
CREATE INDEX completions_client ON exercise_completions(client_id, completed_at);

CREATE TABLE weight_entries (
    id         INTEGER PRIMARY KEY,
    client_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    date       TEXT NOT NULL,
    weight     REAL NOT NULL CHECK (weight > 0),
    photo_path TEXT,
    notes      TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX weight_entries_client ON weight_entries(client_id, date);

CREATE TABLE notifications (
    id           INTEGER PRIMARY KEY,
    recipient_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    sender_id    INTEGER REFERENCES users(id) ON DELETE SET NULL,
    title        TEXT NOT NULL,
    message      TEXT NOT NULL,
    type         TEXT NOT NULL,
    is_read      INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL,
    read_at      TEXT
);
CREATE INDEX notifications_recipient ON notifications(recipient_id, is_read, id);

CREATE TABLE meal_plans (
    id             INTEGER PRIMARY KEY,
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
CREATE INDEX meal_plans_client ON meal_plans(client_id, date);

CREATE TABLE meal_entries (
    id           INTEGER PRIMARY KEY,
    meal_plan_id INTEGER NOT NULL REFERENCES meal_plans(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    order_index  INTEGER NOT NULL,
    notes        TEXT
);
CREATE INDEX meal_entries_plan ON meal_entries(meal_plan_id);

CREATE TABLE meal_components (
    id            INTEGER PRIMARY KEY,
    meal_entry_id INTEGER NOT NULL REFERENCES meal_entries(id) ON DELETE CASCADE,
    type          TEXT NOT NULL,
    description   TEXT NOT NULL,
    calories      INTEGER,
    protein       REAL,
    carbs         REAL,
    fat           REAL,
    is_optional   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX meal_components_entry ON meal_components(meal_entry_id);

CREATE TABLE meal_uploads (
    id              INTEGER PRIMARY KEY,
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
CREATE INDEX meal_uploads_entry ON meal_uploads(meal_entry_id);

-- Uploaded files. `name` is random; the client's filename is never used as a path.
CREATE TABLE files (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,
    name         TEXT NOT NULL,
    owner_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    content_type TEXT NOT NULL,
    size         INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    UNIQUE (kind, name)
);
CREATE INDEX files_owner ON files(owner_id);
