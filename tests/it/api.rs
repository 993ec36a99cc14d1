//! The Elior Fitness API over HTTP against the real `elior serve`: the role matrix for
//! each resource, the three full flows of issue 8, the WebSocket, upload rejections and
//! the OpenAPI document.

use crate::harness::api as api_harness;
use crate::harness::pg as pg_harness;

use api_harness::{matrix, Cast, Db, Server};

/// Runs each named scenario twice: on SQLite, and on a throwaway PostgreSQL cluster with
/// a fresh database (issue 16: every route behaves the same on both backends).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(&super::Db::Sqlite)
            }

            #[test]
            fn postgresql() {
                let cluster = super::pg_harness::Cluster::start();
                super::$name(&super::Db::Postgres(cluster.database()))
            }
        }
    )*};
}

on_both_backends!(
    users_role_matrix_and_assignment,
    trainer_builds_plan_and_client_completes_it,
    meal_photo_review_is_pushed_over_websocket,
    weight_series_then_summary,
    upload_rejections,
    concurrent_completions_never_fail_with_busy,
    collection_routes_answer_with_and_without_a_trailing_slash,
    a_deleted_users_token_never_comes_back,
    logout_all_and_password_change_end_every_session,
    a_deactivated_users_remembered_token_is_refused_at_once,
    login_lock_is_keyed_by_the_resolved_account,
    registration_is_throttled_per_address,
    a_huge_unknown_login_is_a_wrong_login_that_costs_no_memory,
    one_ipv6_network_is_one_client_to_the_throttle,
    a_trainer_needs_the_clients_consent,
    assign_answers_trainers_the_same_404_for_every_id_they_may_not_claim,
    every_status_the_api_answers_is_documented,
    unread_bodies_keep_the_connection_usable,
    a_refused_upload_is_answered_whatever_follows_the_file,
);
use serde_json::{json, Value};

fn users_role_matrix_and_assignment(db: &Db) {
    let s = Server::start_on(db);
    let cast = Cast::new(&s);
    let client = format!("/api/users/{}", cast.client.id);

    // Read a client: admin, their trainer and themselves; others get 404, not 403.
    matrix(&s, &cast, "GET client", [200, 200, 404, 200, 404], |t| {
        s.get(&client, t)
    });
    // Write: the other trainer and client can't even see it.
    matrix(&s, &cast, "PUT client", [200, 200, 404, 200, 404], |t| {
        s.put(
            &client,
            t,
            json!({"client_profile": {"height": 180.0, "goals": "run"}}),
        )
    });
    // Delete: only the admin (tried last, below); the client sees themselves but may not.
    for (token, want) in [
        (&cast.trainer.token, 403),
        (&cast.other_trainer.token, 404),
        (&cast.client.token, 403),
        (&cast.other_client.token, 404),
    ] {
        assert_eq!(s.delete(&client, token).status, want);
    }

    let detail = s.get(&client, &cast.trainer.token);
    assert_eq!(detail.body["client_profile"]["height"], 180.0);
    assert_eq!(detail.body["trainer_id"], cast.trainer.id);
    assert!(detail.body.get("password_hash").is_none());

    // No public user list: list and trainers are admin only; clients are per trainer.
    matrix(
        &s,
        &cast,
        "GET /api/users",
        [200, 403, 403, 403, 403],
        |t| s.get("/api/users", t),
    );
    assert_eq!(s.call("GET", "/api/users", None, None).status, 401);
    let mine = s.get("/api/users/clients", &cast.trainer.token);
    let ids: Vec<i64> = mine
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [cast.client.id]);
    assert_eq!(
        s.get("/api/users/clients", &cast.admin.token)
            .body
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        s.get("/api/users/clients?limit=1000", &cast.admin.token)
            .status,
        422
    );

    // A client sees their own trainer, not the other one.
    assert_eq!(
        s.get(
            &format!("/api/users/{}", cast.trainer.id),
            &cast.client.token
        )
        .status,
        200
    );
    assert_eq!(
        s.get(
            &format!("/api/users/{}", cast.other_trainer.id),
            &cast.client.token
        )
        .status,
        404
    );

    // Strict validation names each bad field.
    let bad = s.put(
        "/api/users/me",
        &cast.client.token,
        json!({"email": "nope", "client_profile": {"height": -1.0}}),
    );
    assert_eq!(bad.status, 422);
    let fields: Vec<&str> = bad.body["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["loc"][1].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "client_profile.height"]);
    assert_eq!(s.post("/api/auth/register/trainer", &cast.trainer.token, json!({"username": "sneaky", "email": "s@example.com", "password": api_harness::PASSWORD, "full_name": "S"})).status, 403);

    // Moving a client: the admin reassigns, and access follows the assignment.
    let reassign = format!(
        "/api/users/trainer/{}/clients/{}",
        cast.other_trainer.id, cast.client.id
    );
    assert_eq!(s.action("POST", &reassign, &cast.trainer.token).status, 403);
    assert_eq!(s.action("POST", &reassign, &cast.admin.token).status, 200);
    assert_eq!(s.get(&client, &cast.trainer.token).status, 404);
    assert_eq!(s.get(&client, &cast.other_trainer.token).status, 200);
    // The new trainer lets go; the old one claims the unassigned client.
    let remove = format!("/api/users/clients/{}/remove", cast.client.id);
    assert_eq!(s.action("POST", &remove, &cast.trainer.token).status, 404);
    assert_eq!(
        s.action("POST", &remove, &cast.other_trainer.token).status,
        200
    );
    let assign = format!("/api/users/clients/{}/assign", cast.client.id);
    assert_eq!(s.action("POST", &assign, &cast.trainer.token).status, 202);
    let accept = format!("/api/users/me/invitations/{}/accept", cast.trainer.id);
    assert_eq!(s.action("POST", &accept, &cast.client.token).status, 200);
    assert_eq!(
        s.action("POST", &assign, &cast.other_trainer.token).status,
        404
    );

    // Deleting: a trainer with clients is refused; a client goes with their data.
    let trainer = format!("/api/users/{}", cast.trainer.id);
    assert_eq!(s.delete(&trainer, &cast.admin.token).status, 409);
    assert_eq!(s.delete(&client, &cast.admin.token).status, 200);
    assert_eq!(s.get(&client, &cast.admin.token).status, 404);
    assert_eq!(s.delete(&trainer, &cast.admin.token).status, 200);
    assert_eq!(s.get("/api/users/me", &cast.trainer.token).status, 401);
}

/// Flow 1: a trainer builds a plan and their client completes it; the role matrix on
/// plans, sessions and completions along the way.
fn trainer_builds_plan_and_client_completes_it(db: &Db) {
    let s = Server::start_on(db);
    let cast = Cast::new(&s);
    let t = &cast.trainer.token;

    let squat = s.post(
        "/api/workouts/exercises",
        t,
        json!({"name": "Squat", "muscle_group": "legs", "equipment_needed": "barbell"}),
    );
    assert_eq!(squat.status, 201, "{:?}", squat.body);
    let squat = squat.body["id"].as_i64().unwrap();
    let press = s
        .post(
            "/api/workouts/exercises",
            t,
            json!({"name": "Bench press", "muscle_group": "chest"}),
        )
        .body["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        s.post(
            "/api/workouts/exercises",
            &cast.client.token,
            json!({"name": "X", "muscle_group": "legs"})
        )
        .status,
        403
    );
    let bad = s.post(
        "/api/workouts/exercises",
        t,
        json!({"name": "", "muscle_group": "wings"}),
    );
    assert_eq!(bad.status, 422);
    assert_eq!(bad.body["detail"].as_array().unwrap().len(), 2);
    let legs = s.get(
        "/api/workouts/exercises?muscle_group=legs&search=squ",
        &cast.client.token,
    );
    assert_eq!(legs.body.as_array().unwrap().len(), 1);

    // Only the client's trainer (or an admin) plans for them.
    let body = json!({"client_id": cast.client.id, "name": "Strength", "start_date": "2026-01-05", "end_date": "2026-03-01"});
    assert_eq!(
        s.post(
            "/api/workouts/plans",
            &cast.other_trainer.token,
            body.clone()
        )
        .status,
        404
    );
    assert_eq!(
        s.post("/api/workouts/plans", &cast.client.token, body.clone())
            .status,
        403
    );
    let bad = s.post("/api/workouts/plans", t, json!({"client_id": cast.client.id, "name": "X", "start_date": "2026-03-01", "end_date": "2026-01-01"}));
    assert_eq!(bad.status, 422);
    let plan = s.post("/api/workouts/plans", t, body);
    assert_eq!(plan.status, 201, "{:?}", plan.body);
    let plan = plan.body["id"].as_i64().unwrap();
    let plan_url = format!("/api/workouts/plans/{plan}");

    let monday = s.post(
        &format!("{plan_url}/sessions"),
        t,
        json!({"name": "Legs day", "day_of_week": 0}),
    );
    assert_eq!(monday.status, 201);
    let monday = monday.body["id"].as_i64().unwrap();
    assert_eq!(
        s.post(
            &format!("{plan_url}/sessions"),
            t,
            json!({"name": "X", "day_of_week": 7})
        )
        .status,
        422
    );
    let one = s.post(&format!("/api/workouts/sessions/{monday}/exercises"), t, json!({"exercise_id": squat, "order": 1, "sets": 5, "reps": "5", "weight": 100.0, "rest_time": 180}));
    assert_eq!(one.status, 201, "{:?}", one.body);
    let bulk = s.post(
        &format!("/api/workouts/sessions/{monday}/exercises/bulk"),
        t,
        json!({"exercises": [
            {"exercise_id": press, "order": 2, "sets": 3, "reps": "8-12"},
            {"exercise_id": squat, "order": 3, "sets": 2, "reps": "20"}
        ]}),
    );
    assert_eq!(bulk.status, 201, "{:?}", bulk.body);
    // All or none: one unknown exercise refuses the whole batch.
    let refused = s.post(
        &format!("/api/workouts/sessions/{monday}/exercises/bulk"),
        t,
        json!({"exercises": [
            {"exercise_id": press, "order": 4}, {"exercise_id": 99999, "order": 5}
        ]}),
    );
    assert_eq!(refused.status, 404, "{:?}", refused.body);
    assert_eq!(
        refused.body["detail"],
        "exercises.1.exercise_id: names no exercise"
    );

    matrix(&s, &cast, "GET plan", [200, 200, 404, 200, 404], |tok| {
        s.get(&plan_url, tok)
    });
    matrix(&s, &cast, "PUT plan", [200, 200, 404, 403, 404], |tok| {
        s.put(
            &plan_url,
            tok,
            json!({"name": "Strength block", "start_date": "2026-01-05"}),
        )
    });
    // The list sizes themselves, per role (the matrix checks statuses only): the one
    // plan for those it belongs to and the admin, none for the others.
    matrix(&s, &cast, "GET plans list", [200; 5], |tok| {
        s.get("/api/workouts/plans", tok)
    });
    let sizes: Vec<(&str, usize)> = cast
        .roles()
        .iter()
        .map(|(role, tok)| {
            let list = s.get("/api/workouts/plans", tok).body;
            (*role, list.as_array().map_or(usize::MAX, Vec::len))
        })
        .collect();
    assert_eq!(
        sizes,
        [
            ("admin", 1),
            ("owning trainer", 1),
            ("other trainer", 0),
            ("owning client", 1),
            ("other client", 0)
        ]
    );

    // The client reads the whole plan nested, then logs the session.
    let complete = s.get(&format!("{plan_url}/complete"), &cast.client.token);
    assert_eq!(complete.status, 200);
    let sessions = complete.body["workout_sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    let wex: Vec<i64> = sessions[0]["workout_exercises"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(wex.len(), 3);
    assert_eq!(
        sessions[0]["workout_exercises"][0]["exercise"]["name"],
        "Squat"
    );
    assert_eq!(sessions[0]["workout_exercises"][1]["reps"], "8-12");

    let c = &cast.client.token;
    let bad = s.post(
        "/api/workouts/completions",
        c,
        json!({"workout_exercise_id": wex[0], "difficulty_rating": 6}),
    );
    assert_eq!(bad.status, 422);
    assert_eq!(bad.body["detail"][0]["loc"][1], "difficulty_rating");
    assert_eq!(
        s.post(
            "/api/workouts/completions",
            &cast.other_client.token,
            json!({"workout_exercise_id": wex[0]})
        )
        .status,
        404
    );
    assert_eq!(
        s.post(
            "/api/workouts/completions",
            t,
            json!({"workout_exercise_id": wex[0]})
        )
        .status,
        403
    );
    let first = s.post("/api/workouts/completions", c, json!({"workout_exercise_id": wex[0], "actual_sets": 5, "actual_reps": "5", "weight_used": 100.0, "difficulty_rating": 4}));
    assert_eq!(first.status, 201, "{:?}", first.body);
    let rest = s.post("/api/workouts/completions/bulk", c, json!({"completions": [
        {"workout_exercise_id": wex[1], "actual_sets": 3, "weight_used": 60.0, "difficulty_rating": 3},
        {"workout_exercise_id": wex[2], "actual_sets": 2, "weight_used": 105.0, "difficulty_rating": 5}
    ]}));
    assert_eq!(rest.status, 201, "{:?}", rest.body);
    let done = format!("/api/workouts/completions/{}", first.body["id"]);
    matrix(
        &s,
        &cast,
        "GET completion",
        [200, 200, 404, 200, 404],
        |tok| s.get(&done, tok),
    );

    let summary = s.get(&format!("{plan_url}/summary"), t);
    assert_eq!(summary.status, 200);
    assert_eq!(summary.body["completed_sessions"], 1);
    assert_eq!(summary.body["completed_exercises"], 3);
    assert_eq!(summary.body["completion_rate"], 100.0);
    let progress = s.get(
        &format!(
            "/api/workouts/exercises/{squat}/progress?client_id={}",
            cast.client.id
        ),
        t,
    );
    assert_eq!(progress.status, 200, "{:?}", progress.body);
    assert_eq!(progress.body["total_completions"], 2);
    assert_eq!(progress.body["max_weight"], 105.0);
    assert_eq!(progress.body["history"].as_array().unwrap().len(), 2);
    assert_eq!(
        s.get(
            &format!(
                "/api/workouts/exercises/{squat}/progress?client_id={}",
                cast.client.id
            ),
            &cast.other_trainer.token
        )
        .status,
        404
    );

    // The trainer heard about it.
    let notes = s.get("/api/notifications", t);
    assert_eq!(notes.status, 200);
    assert_eq!(notes.body[0]["type"], "workout_completed");
    // And the client about the plan.
    assert_eq!(
        s.get("/api/notifications", c).body[0]["type"],
        "workout_plan"
    );

    // Only the client who logged a completion (or an admin) deletes it: their trainer sees
    // it but gets 403, another trainer 404 as for anything unseen.
    for (token, want) in [(&cast.other_trainer.token, 404), (t, 403), (c, 200)] {
        assert_eq!(s.delete(&done, token).status, want, "DELETE completion");
    }

    // An exercise in use can't be deleted; deleting the plan removes everything under it.
    assert_eq!(
        s.delete(
            &format!("/api/workouts/exercises/{squat}"),
            &cast.other_trainer.token
        )
        .status,
        403
    );
    assert_eq!(
        s.delete(&format!("/api/workouts/exercises/{squat}"), t)
            .status,
        409
    );
    for (token, want) in [
        (&cast.other_trainer.token, 404),
        (&cast.client.token, 403),
        (&cast.other_client.token, 404),
    ] {
        assert_eq!(s.delete(&plan_url, token).status, want);
    }
    assert_eq!(s.delete(&plan_url, t).status, 200);
    assert_eq!(s.get(&done, t).status, 404);
    assert_eq!(
        s.get(&format!("/api/workouts/sessions/{monday}"), t).status,
        404
    );
    assert_eq!(
        s.delete(&format!("/api/workouts/exercises/{squat}"), t)
            .status,
        200
    );
}

/// A real image, encoded by the `image` crate.
fn image_bytes(format: image::ImageFormat, w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb([200, 100, 50]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

mod ws {
    use std::net::TcpStream;
    use std::time::Duration;

    use serde_json::Value;
    use tungstenite::stream::MaybeTlsStream;
    use tungstenite::{Message, WebSocket};

    pub type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

    pub fn open(port: u16, path: &str) -> Socket {
        let (mut socket, _) = tungstenite::connect(format!("ws://127.0.0.1:{port}{path}"))
            .expect("websocket handshake");
        if let MaybeTlsStream::Plain(s) = socket.get_mut() {
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        }
        socket
    }

    /// The next text message as JSON, skipping pings.
    pub fn next_json(socket: &mut Socket) -> Value {
        loop {
            match socket.read().expect("websocket message") {
                Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// The close code the server ends with.
    pub fn close_code(socket: &mut Socket) -> u16 {
        close_frame(socket).0
    }

    /// The close code and reason the server ends with, skipping any messages before.
    pub fn close_frame(socket: &mut Socket) -> (u16, String) {
        loop {
            match socket.read() {
                Ok(Message::Close(Some(frame))) => {
                    return (frame.code.into(), frame.reason.to_string())
                }
                Ok(Message::Close(None)) => return (1005, String::new()),
                Ok(_) => continue,
                Err(e) => panic!("socket ended without a close frame: {e}"),
            }
        }
    }
}

/// Flow 2: a meal photo is uploaded, reviewed, and the review reaches the client over a
/// live WebSocket (on both of their connections); the photo is served only to those who
/// may see it.
fn meal_photo_review_is_pushed_over_websocket(db: &Db) {
    let s = Server::start_on(db);
    let cast = Cast::new(&s);
    let t = &cast.trainer.token;
    let c = &cast.client.token;

    let plan = s.post("/api/meal-plans", t, json!({"client_id": cast.client.id, "date": "2026-02-02", "title": "Cut day", "total_calories": 2000, "protein_target": 160}));
    assert_eq!(plan.status, 201, "{:?}", plan.body);
    let plan = plan.body["id"].as_i64().unwrap();
    assert_eq!(
        s.post(
            "/api/meal-plans",
            t,
            json!({"client_id": cast.client.id, "date": "2026-02-02", "title": "Twice"})
        )
        .status,
        409
    );
    let unknown = s.post(
        "/api/meal-plans",
        t,
        json!({"client_id": cast.client.id, "date": "2026-02-03", "title": "X", "calories": 1}),
    );
    assert_eq!(
        unknown.status, 422,
        "unknown fields are refused: {:?}",
        unknown.body
    );
    let entry = s.post(
        &format!("/api/meal-plans/{plan}/entries"),
        t,
        json!({"name": "Breakfast", "order": 1}),
    );
    assert_eq!(entry.status, 201, "{:?}", entry.body);
    let entry = entry.body["id"].as_i64().unwrap();
    let lunch = s
        .post(
            &format!("/api/meal-plans/{plan}/entries"),
            t,
            json!({"name": "Lunch", "order": 2}),
        )
        .body["id"]
        .as_i64()
        .unwrap();
    for (e, kind, kcal) in [
        (entry, "protein", 300),
        (entry, "carb", 200),
        (lunch, "vegetable", 150),
    ] {
        let k = s.post(
            &format!("/api/meal-plans/entries/{e}/components"),
            t,
            json!({"type": kind, "description": "food", "calories": kcal, "protein": 20.0}),
        );
        assert_eq!(k.status, 201, "{:?}", k.body);
    }
    assert_eq!(
        s.post(
            &format!("/api/meal-plans/entries/{entry}/components"),
            t,
            json!({"type": "cake", "description": ""})
        )
        .status,
        422
    );
    let plan_url = format!("/api/meal-plans/{plan}");
    matrix(
        &s,
        &cast,
        "GET meal plan",
        [200, 200, 404, 200, 404],
        |tok| s.get(&plan_url, tok),
    );
    matrix(
        &s,
        &cast,
        "PUT meal plan",
        [200, 200, 404, 403, 404],
        |tok| {
            s.put(&plan_url, tok, json!({"date": "2026-02-02", "title": "Cut day", "total_calories": 2000, "protein_target": 160}))
        },
    );

    // Two live connections for the client.
    let path = format!("/api/ws/ws/{}?token={c}", cast.client.id);
    let mut first = ws::open(s.port, &path);
    let mut second = ws::open(s.port, &path);
    for socket in [&mut first, &mut second] {
        let welcome = ws::next_json(socket);
        assert_eq!(welcome["type"], "connection_established");
        assert_eq!(welcome["user_id"], cast.client.id);
    }
    first
        .send(tungstenite::Message::text(r#"{"type":"ping"}"#))
        .unwrap();
    assert_eq!(ws::next_json(&mut first)["type"], "pong");
    let stats = s.get("/api/ws/ws/stats", &cast.admin.token);
    assert_eq!(stats.body["total_connections"], 2, "{:?}", stats.body);
    assert_eq!(s.get("/api/ws/ws/stats", t).status, 403);

    // Only the owning client posts a photo for their entry.
    let jpeg = image_bytes(image::ImageFormat::Jpeg, 800, 400);
    let photo = format!("/api/meal-plans/uploads/{entry}/photo");
    assert_eq!(
        s.upload(&photo, &cast.other_client.token, "image", "meal.jpg", &jpeg)
            .status,
        404
    );
    assert_eq!(s.upload(&photo, t, "image", "meal.jpg", &jpeg).status, 403);
    let up = s.upload(&photo, c, "image", "meal.jpg", &jpeg);
    assert_eq!(up.status, 201, "{:?}", up.body);
    assert_eq!(up.body["status"], "pending");
    let upload_id = up.body["id"].as_i64().unwrap();
    let image_url = up.body["image_path"].as_str().unwrap().to_string();

    // The photo: served with the access check, in three sizes.
    matrix(
        &s,
        &cast,
        "GET meal photo",
        [200, 200, 404, 200, 404],
        |tok| s.get(&image_url, tok),
    );
    assert_eq!(s.call("GET", &image_url, None, None).status, 401);
    let thumb = s.get(&format!("{image_url}?size=thumbnail"), t);
    assert_eq!(thumb.header("content-type"), Some("image/jpeg"));
    let decoded = image::load_from_memory(&thumb.bytes).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (150, 75));
    let medium =
        image::load_from_memory(&s.get(&format!("{image_url}?size=medium"), t).bytes).unwrap();
    assert_eq!(medium.width(), 600);
    assert_eq!(s.get(&format!("{image_url}?size=huge"), t).status, 422);
    let name = image_url.rsplit('/').next().unwrap();

    // The trainer heard about the upload, then reviews; the review is pushed live.
    let review = format!("/api/meal-plans/uploads/{upload_id}/review");
    assert_eq!(
        s.put(
            &review,
            &cast.other_trainer.token,
            json!({"status": "approved"})
        )
        .status,
        404
    );
    assert_eq!(s.put(&review, c, json!({"status": "approved"})).status, 403);
    assert_eq!(s.put(&review, t, json!({"status": "maybe"})).status, 422);
    let reviewed = s.put(
        &review,
        t,
        json!({"status": "approved", "trainer_comment": "Great portion"}),
    );
    assert_eq!(reviewed.status, 200, "{:?}", reviewed.body);
    for socket in [&mut first, &mut second] {
        let pushed = ws::next_json(socket);
        assert_eq!(pushed["type"], "notification");
        assert_eq!(pushed["data"]["type"], "meal_review");
        assert_eq!(
            pushed["data"]["message"],
            "Your meal photo was approved: Great portion"
        );
    }

    // The day's summary counts the photographed meal as eaten.
    let summary = s.get(
        &format!("/api/meal-plans/summary/{}/2026-02-02", cast.client.id),
        t,
    );
    assert_eq!(summary.status, 200, "{:?}", summary.body);
    assert_eq!(summary.body["eaten"]["calories"], 500.0);
    assert_eq!(summary.body["planned"]["calories"], 650.0);
    assert_eq!(summary.body["meals_eaten"], 1);
    assert_eq!(summary.body["uploads_approved"], 1);
    assert_eq!(
        s.get(
            &format!("/api/meal-plans/summary/{}/2026-02-02", cast.client.id),
            &cast.other_trainer.token
        )
        .status,
        404
    );
    let nested = s.get(&format!("{plan_url}/complete"), c);
    assert_eq!(
        nested.body["meal_entries"][0]["meal_components"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        nested.body["meal_entries"][0]["uploads"][0]["status"],
        "approved"
    );

    // Notifications: count, mark read, mark all, delete; another's id is 404.
    let count = s.get("/api/notifications/count", c);
    assert_eq!(count.body["unread_count"], 2, "{:?}", count.body); // meal plan + review
    let newest = s.get("/api/notifications?unread_only=true&limit=1", c);
    assert_eq!(newest.body.as_array().unwrap().len(), 1);
    let note = newest.body[0]["id"].as_i64().unwrap();
    assert_eq!(
        s.action(
            "PUT",
            &format!("/api/notifications/{note}/read"),
            &cast.other_client.token
        )
        .status,
        404
    );
    assert_eq!(
        s.action("PUT", &format!("/api/notifications/{note}/read"), c)
            .status,
        200
    );
    assert_eq!(s.get("/api/notifications/count", c).body["unread_count"], 1);
    assert_eq!(
        s.action("PUT", "/api/notifications/mark-all-read", c)
            .status,
        200
    );
    assert_eq!(s.get("/api/notifications/count", c).body["unread_count"], 0);
    assert_eq!(
        s.delete(
            &format!("/api/notifications/{note}"),
            &cast.other_client.token
        )
        .status,
        404
    );
    assert_eq!(
        s.delete(&format!("/api/notifications/{note}"), c).status,
        200
    );
    assert_eq!(s.get("/api/notifications?limit=101", c).status, 422);
    // A trainer writes to their own client only; clients can't send.
    let msg = json!({"recipient_id": cast.client.id, "title": "Hi", "message": "Keep going"});
    assert_eq!(
        s.post("/api/notifications", &cast.other_trainer.token, msg.clone())
            .status,
        404
    );
    assert_eq!(
        s.post("/api/notifications", &cast.other_client.token, msg.clone())
            .status,
        403
    );
    assert_eq!(s.post("/api/notifications", t, msg).status, 201);
    assert_eq!(ws::next_json(&mut first)["data"]["title"], "Hi");

    // Deleting the plan removes the photo and its derivatives from disk.
    let stored = s.dir.path().join("uploads/meal_photos").join(name);
    assert!(stored.exists());
    for (token, want) in [
        (&cast.other_trainer.token, 404),
        (c, 403),
        (&cast.other_client.token, 404),
    ] {
        assert_eq!(s.delete(&plan_url, token).status, want);
    }
    // The photo's own file can't be deleted while its meal upload points at it.
    assert_eq!(s.delete(&image_url, c).status, 409);
    assert_eq!(s.delete(&plan_url, t).status, 200);
    assert!(!stored.exists());
    assert!(!s
        .dir
        .path()
        .join("uploads/meal_photos/thumbnail")
        .join(name)
        .exists());
    assert_eq!(s.get(&image_url, t).status, 404);
}

/// Flow 3: a weight series, then its summary against the profile's target.
fn weight_series_then_summary(db: &Db) {
    let s = Server::start_on(db);
    let cast = Cast::new(&s);
    let c = &cast.client.token;
    assert_eq!(
        s.put(
            "/api/users/me",
            c,
            json!({"client_profile": {"target_weight": 75.0}})
        )
        .status,
        200
    );
    for (date, kg) in [
        ("2026-01-01", 82.0),
        ("2026-01-08", 81.2),
        ("2026-01-15", 80.1),
        ("2026-01-22", 79.5),
    ] {
        let r = s.post(
            "/api/progress/weight",
            c,
            json!({"date": date, "weight": kg}),
        );
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let bad = s.post(
        "/api/progress/weight",
        c,
        json!({"date": "2026-13-01", "weight": 0}),
    );
    assert_eq!(bad.status, 422);
    assert_eq!(bad.body["detail"].as_array().unwrap().len(), 2);
    // The trainer records one for their client; the other trainer can't.
    assert_eq!(
        s.post(
            "/api/progress/weight",
            &cast.other_trainer.token,
            json!({"client_id": cast.client.id, "date": "2026-01-29", "weight": 79.0})
        )
        .status,
        404
    );
    let by_trainer = s.post(
        "/api/progress/weight",
        &cast.trainer.token,
        json!({"client_id": cast.client.id, "date": "2026-01-29", "weight": 79.0}),
    );
    assert_eq!(by_trainer.status, 201);

    let range = s.get(
        "/api/progress/weight?start_date=2026-01-08&end_date=2026-01-22",
        c,
    );
    let weights: Vec<f64> = range
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["weight"].as_f64().unwrap())
        .collect();
    assert_eq!(weights, [81.2, 80.1, 79.5]);
    assert_eq!(
        s.get("/api/progress/weight/current", c).body["weight"],
        79.0
    );

    let summary = s.get(
        &format!("/api/progress/weight/summary?client_id={}", cast.client.id),
        &cast.trainer.token,
    );
    assert_eq!(summary.status, 200, "{:?}", summary.body);
    assert_eq!(summary.body["entries"], 5);
    assert_eq!(summary.body["starting_weight"], 82.0);
    assert_eq!(summary.body["current_weight"], 79.0);
    assert_eq!(summary.body["change"], -3.0);
    assert_eq!(summary.body["remaining_to_target"], 4.0);

    let list = format!("/api/progress/weight?client_id={}", cast.client.id);
    matrix(&s, &cast, "GET weights", [200, 200, 404, 200, 404], |tok| {
        s.get(&list, tok)
    });
    let entry = format!("/api/progress/weight/{}", by_trainer.body["id"]);
    for (token, want) in [
        (&cast.other_trainer.token, 404),
        (&cast.other_client.token, 404),
        (c, 200),
    ] {
        assert_eq!(s.delete(&entry, token).status, want);
    }
    assert_eq!(
        s.get("/api/progress/weight/current", c).body["weight"],
        79.5
    );
}

/// Uploads are judged by content: a renamed .exe, an oversize file and a `../` name.
fn upload_rejections(db: &Db) {
    // Requests from 127.0.0.1 count as the stack's nginx here (TRUSTED_PROXIES).
    let s = Server::start_on_with(
        db,
        &[
            ("MAX_FILE_SIZE", "200000"),
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ],
    );
    let cast = Cast::new(&s);
    let c = &cast.client.token;
    let url = "/api/files/upload/progress_photos";

    let mut exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff".to_vec();
    exe.extend(std::iter::repeat_n(0u8, 1000));
    let r = s.upload(url, c, "file", "holiday.jpg", &exe);
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert!(r.body["detail"][0]["msg"]
        .as_str()
        .unwrap()
        .contains("not an allowed type"));

    let mut big = image_bytes(image::ImageFormat::Png, 10, 10);
    big.extend(std::iter::repeat_n(0u8, 300_000));
    let r = s.upload(url, c, "file", "big.png", &big);
    assert_eq!(r.status, 422);
    assert!(r.body["detail"][0]["msg"]
        .as_str()
        .unwrap()
        .contains("larger than 200000"));

    // A PDF is a document, not a photo; a PNG is not a document.
    assert_eq!(
        s.upload(url, c, "file", "x.jpg", b"%PDF-1.7\n...").status,
        422
    );
    assert_eq!(
        s.upload(
            "/api/files/upload/documents",
            c,
            "file",
            "x.pdf",
            &image_bytes(image::ImageFormat::Png, 4, 4)
        )
        .status,
        422
    );
    assert_eq!(
        s.upload(
            "/api/files/upload/passwords",
            c,
            "file",
            "x.png",
            &image_bytes(image::ImageFormat::Png, 4, 4)
        )
        .status,
        422
    );
    // Magic bytes but not a real image.
    assert_eq!(
        s.upload(url, c, "file", "x.png", b"\x89PNG\r\n\x1a\ngarbage")
            .status,
        422
    );

    let png = image_bytes(image::ImageFormat::Png, 40, 20);
    let r = s.upload(url, c, "file", "../../../../tmp/evil.png", &png);
    assert_eq!(r.status, 201, "{:?}", r.body);
    let name = r.body["name"].as_str().unwrap();
    assert!(!name.contains("evil") && !name.contains('/'), "{name}");
    assert!(s
        .dir
        .path()
        .join("uploads/progress_photos")
        .join(name)
        .exists());
    let file_url = r.body["url"].as_str().unwrap().to_string();
    // Behind nginx the body is handed to nginx's internal location instead.
    let accel = s.get(&format!("{file_url}?size=thumbnail"), c);
    assert_eq!(accel.status, 200);
    assert_eq!(
        accel.header("x-accel-redirect"),
        Some(format!("/_protected/uploads/progress_photos/thumbnail/{name}").as_str())
    );
    assert!(accel.bytes.is_empty());
    // Traversal in the media path never reaches the disk.
    assert_eq!(
        s.get("/api/files/media/progress_photos/..%2F..%2Felior.db", c)
            .status,
        404
    );

    // The photo attaches to the client's own weight entry only.
    let mine = s.post(
        "/api/progress/weight",
        c,
        json!({"date": "2026-01-01", "weight": 70.5, "photo_path": file_url}),
    );
    assert_eq!(mine.status, 201, "{:?}", mine.body);
    let theirs = s.post(
        "/api/progress/weight",
        &cast.other_client.token,
        json!({"date": "2026-01-01", "weight": 70.5, "photo_path": file_url}),
    );
    assert_eq!(theirs.status, 404, "{:?}", theirs.body);
    assert_eq!(
        theirs.body["detail"],
        "photo_path: names no uploaded file of the client"
    );
    // What is no media URL of a progress photo at all is a bad field, as the document's
    // pattern says.
    let doc = s.call("GET", "/openapi.json", None, None).body;
    let pattern = doc["components"]["schemas"]["NewEntry"]["properties"]["photo_path"].to_string();
    assert!(
        pattern.contains("progress_photos/[0-9a-f]{32}"),
        "{pattern}"
    );
    for not_a_photo_url in [
        "../../elior.db".to_string(),
        file_url.replace("progress_photos", "documents"),
    ] {
        let r = s.post(
            "/api/progress/weight",
            c,
            json!({"date": "2026-01-02", "weight": 70.5, "photo_path": not_a_photo_url}),
        );
        assert_eq!(r.status, 422, "{not_a_photo_url}: {:?}", r.body);
    }

    let stats = s.get("/api/files/media/stats", &cast.admin.token);
    assert_eq!(stats.body["total_files"], 1, "{:?}", stats.body);
    assert_eq!(s.get("/api/files/media/stats", c).status, 403);
    assert_eq!(s.delete(&file_url, &cast.other_client.token).status, 404);
    // Still attached to the weigh-in: deleting it directly would leave a dangling link.
    assert_eq!(s.delete(&file_url, c).status, 409);
    assert_eq!(
        s.delete(&format!("/api/progress/weight/{}", mine.body["id"]), c)
            .status,
        200
    );
    assert_eq!(s.delete(&file_url, c).status, 200);
    assert!(!s
        .dir
        .path()
        .join("uploads/progress_photos")
        .join(name)
        .exists());
    assert!(!s
        .dir
        .path()
        .join("uploads/progress_photos/medium")
        .join(name)
        .exists());
}

/// The WebSocket refuses with the original close codes, and closes open sockets when the
/// server is asked to stop, so they don't hold the graceful drain.
#[test]
fn websocket_close_codes_and_shutdown() {
    let mut s = Server::start();
    let cast = Cast::new(&s);
    let c = &cast.client.token;
    let id = cast.client.id;
    assert_eq!(
        ws::close_code(&mut ws::open(s.port, &format!("/api/ws/ws/{id}"))),
        4001
    );
    assert_eq!(
        ws::close_code(&mut ws::open(
            s.port,
            &format!("/api/ws/ws/{id}?token=garbage")
        )),
        4002
    );
    assert_eq!(
        ws::close_code(&mut ws::open(
            s.port,
            &format!("/api/ws/ws/{}?token={c}", cast.other_client.id)
        )),
        4003
    );

    let mut open = ws::open(s.port, &format!("/api/ws/ws/{id}?token={c}"));
    assert_eq!(ws::next_json(&mut open)["type"], "connection_established");
    let status = s.terminate();
    assert_eq!(ws::close_code(&mut open), 1001);
    assert!(status.success(), "{status:?}");
}

/// Issue 19: a client that never reads is dropped with 1008 once its outbox fills, and the
/// user's other socket, which reads, gets every notification meanwhile.
#[test]
fn a_websocket_client_that_never_reads_is_dropped_and_others_keep_up() {
    let s = Server::start();
    let cast = Cast::new(&s);
    let c = &cast.client.token;
    let path = format!("/api/ws/ws/{}?token={c}", cast.client.id);
    let mut slow = ws::open(s.port, &path);
    assert_eq!(ws::next_json(&mut slow)["type"], "connection_established");
    let mut fast = ws::open(s.port, &path);
    assert_eq!(ws::next_json(&mut fast)["type"], "connection_established");
    let reader = std::thread::spawn(move || {
        let mut seen = 0;
        loop {
            let message = ws::next_json(&mut fast);
            assert_eq!(message["type"], "notification", "{message}");
            if message["data"]["title"] == "last" {
                return (seen, fast);
            }
            seen += 1;
        }
    });

    // Long messages fill the slow socket's buffers sooner; a few hundred usually do.
    let long = "x".repeat(2000);
    let send = |title: &str| {
        let r = s.post(
            "/api/notifications",
            &cast.trainer.token,
            json!({"recipient_id": cast.client.id, "title": title, "message": long}),
        );
        assert_eq!(r.status, 201, "{:?}", r.body);
    };
    let stats = || s.get("/api/ws/ws/stats", &cast.admin.token).body;
    let mut sent = 0;
    while stats()["slow_disconnects"] == 0 {
        assert!(
            sent < 20_000,
            "the client that never reads was never dropped"
        );
        for _ in 0..25 {
            send("n");
            sent += 1;
        }
    }
    assert_eq!(stats()["total_connections"], 1, "{}", stats());
    send("last");
    let (seen, mut fast) = reader.join().unwrap();
    assert_eq!(seen, sent, "the reading socket got every notification");

    // Once it reads, the slow client finds the close code after what was in flight.
    let (code, reason) = ws::close_frame(&mut slow);
    assert_eq!(code, 1008, "{reason}");
    fast.send(tungstenite::Message::text("ping")).unwrap();
    assert_eq!(ws::next_json(&mut fast)["type"], "pong");
}

/// Issue 19: a socket that answers nothing (not even the server's pings) is closed after
/// WS_TIMEOUT_SECONDS; one whose client reads (and so answers pings) stays open.
#[test]
fn a_silent_websocket_is_closed_and_a_live_one_stays() {
    let s = Server::start_with(&[("WS_TIMEOUT_SECONDS", "1")]);
    let cast = Cast::new(&s);
    let c = &cast.client.token;
    let path = format!("/api/ws/ws/{}?token={c}", cast.client.id);
    let mut silent = ws::open(s.port, &path);
    let opened = std::time::Instant::now();
    assert_eq!(ws::next_json(&mut silent)["type"], "connection_established");
    let mut live = ws::open(s.port, &path);
    assert_eq!(ws::next_json(&mut live)["type"], "connection_established");
    let live = std::thread::spawn(move || {
        // Reading answers the server's pings (tungstenite replies on its own).
        if let tungstenite::stream::MaybeTlsStream::Plain(t) = live.get_mut() {
            t.set_read_timeout(Some(std::time::Duration::from_millis(100)))
                .unwrap();
        }
        let mut pings = 0;
        let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while std::time::Instant::now() < until {
            match live.read() {
                Ok(tungstenite::Message::Ping(_)) => pings += 1,
                Ok(other) => panic!("unexpected {other:?}"),
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("the live socket failed: {e}"),
            }
        }
        (pings, live)
    });

    // The silent one is dropped after the timeout: wait for that (10 s at most), not for
    // a fixed 2 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let stats = loop {
        let stats = s.get("/api/ws/ws/stats", &cast.admin.token).body;
        if stats["total_connections"] == 1 || std::time::Instant::now() > deadline {
            break stats;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let after = opened.elapsed();
    assert_eq!(stats["total_connections"], 1, "{stats} after {after:?}");
    let (code, reason) = ws::close_frame(&mut silent);
    assert_eq!(code, 1001, "{reason}");
    assert!(reason.contains("No answer to pings"), "{reason}");
    let (pings, mut live) = live.join().unwrap();
    assert!(pings >= 3, "pings every half timeout: {pings} in 3 s");
    if let tungstenite::stream::MaybeTlsStream::Plain(t) = live.get_mut() {
        t.set_read_timeout(Some(std::time::Duration::from_secs(15)))
            .unwrap();
    }
    live.send(tungstenite::Message::text("ping")).unwrap();
    assert_eq!(ws::next_json(&mut live)["type"], "pong");
}

/// The OpenAPI document lists exactly the routes the router answers, and holds together:
/// every `$ref` resolves, every path parameter is declared, operation ids are unique.
#[test]
fn openapi_lists_every_route() {
    let s = Server::start();
    let cast = Cast::new(&s);
    let doc = s.call("GET", "/openapi.json", None, None);
    assert_eq!(doc.status, 200);
    let doc = doc.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let schemas = doc["components"]["schemas"].as_object().unwrap();

    let mut operations = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations.push(format!("{} {path}", method.to_uppercase()));
            assert!(
                ids.insert(op["operationId"].as_str().unwrap().to_string()),
                "duplicate id at {path}"
            );
            let declared: Vec<&str> = op["parameters"].as_array().map_or(vec![], |ps| {
                ps.iter()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect()
            });
            for name in path
                .split('{')
                .skip(1)
                .map(|p| p.split('}').next().unwrap())
            {
                assert!(
                    declared.contains(&name),
                    "{method} {path}: {name} undeclared"
                );
            }
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
        }
    }
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "unresolved $ref {name}");
    }

    // Regression: two handler modules each had a `PlanBody`; one schema silently replaced
    // the other, so meal plans were documented with workout plan fields.
    let body_schema = |path: &str| {
        let r = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
            ["$ref"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        schemas[&r].to_string()
    };
    assert!(body_schema("/api/meal-plans").contains("\"date\""));
    assert!(body_schema("/api/workouts/plans").contains("\"start_date\""));

    // Every documented operation is routed: never the fallback 404 nor a 405.
    let token = &cast.admin.token;
    for op in &operations {
        let (method, path) = op.split_once(' ').unwrap();
        let concrete: String = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "999999" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let r = s.call(method, &concrete, Some(token), None);
        assert_ne!(r.status, 405, "{op}");
        assert!(
            !(r.status == 404 && r.body["detail"] == "Not Found"),
            "{op} is not routed"
        );
    }

    // And the routes this issue asked for are all there (the router is built from the
    // same attributes, so a route can't exist without its operation).
    let expected = [
        "GET /",
        "GET /health",
        "GET /status/database",
        "GET /metrics",
        "POST /api/auth/register",
        "POST /api/auth/login",
        "POST /api/auth/logout-all",
        "POST /api/auth/token",
        "GET /api/auth/me",
        "POST /api/auth/refresh",
        "POST /api/auth/password/change",
        "POST /api/auth/setup/admin",
        "POST /api/auth/register/trainer",
        "POST /api/auth/register/client",
        "GET /api/users",
        "GET /api/users/me",
        "PUT /api/users/me",
        "GET /api/users/clients",
        "GET /api/users/trainers",
        "GET /api/users/{id}",
        "PUT /api/users/{id}",
        "DELETE /api/users/{id}",
        "POST /api/users/clients/{id}/assign",
        "GET /api/users/me/invitations",
        "POST /api/users/me/invitations/{trainer_id}/accept",
        "DELETE /api/users/me/invitations/{trainer_id}",
        "POST /api/users/clients/{id}/remove",
        "POST /api/users/trainer/{tid}/clients/{cid}",
        "DELETE /api/users/trainer/{tid}/clients/{cid}",
        "GET /api/workouts/exercises",
        "POST /api/workouts/exercises",
        "GET /api/workouts/exercises/{id}",
        "PUT /api/workouts/exercises/{id}",
        "DELETE /api/workouts/exercises/{id}",
        "GET /api/workouts/exercises/{id}/progress",
        "GET /api/workouts/plans",
        "POST /api/workouts/plans",
        "GET /api/workouts/plans/{id}",
        "PUT /api/workouts/plans/{id}",
        "DELETE /api/workouts/plans/{id}",
        "GET /api/workouts/plans/{id}/complete",
        "GET /api/workouts/plans/{id}/summary",
        "GET /api/workouts/plans/{id}/sessions",
        "POST /api/workouts/plans/{id}/sessions",
        "GET /api/workouts/sessions/{id}",
        "PUT /api/workouts/sessions/{id}",
        "DELETE /api/workouts/sessions/{id}",
        "GET /api/workouts/sessions/{id}/exercises",
        "POST /api/workouts/sessions/{id}/exercises",
        "POST /api/workouts/sessions/{id}/exercises/bulk",
        "GET /api/workouts/workout-exercises/{id}",
        "PUT /api/workouts/workout-exercises/{id}",
        "DELETE /api/workouts/workout-exercises/{id}",
        "GET /api/workouts/completions",
        "POST /api/workouts/completions",
        "POST /api/workouts/completions/bulk",
        "GET /api/workouts/completions/{id}",
        "DELETE /api/workouts/completions/{id}",
        "GET /api/meal-plans",
        "POST /api/meal-plans",
        "GET /api/meal-plans/{id}",
        "PUT /api/meal-plans/{id}",
        "DELETE /api/meal-plans/{id}",
        "GET /api/meal-plans/{id}/complete",
        "POST /api/meal-plans/{id}/entries",
        "GET /api/meal-plans/entries/{id}",
        "PUT /api/meal-plans/entries/{id}",
        "DELETE /api/meal-plans/entries/{id}",
        "POST /api/meal-plans/entries/{id}/components",
        "GET /api/meal-plans/components/{id}",
        "PUT /api/meal-plans/components/{id}",
        "DELETE /api/meal-plans/components/{id}",
        "POST /api/meal-plans/uploads/{id}/photo",
        "GET /api/meal-plans/uploads/{id}",
        "DELETE /api/meal-plans/uploads/{id}",
        "PUT /api/meal-plans/uploads/{id}/review",
        "GET /api/meal-plans/summary/{client_id}/{date}",
        "GET /api/meal-plans/summary/today",
        "GET /api/progress/weight",
        "POST /api/progress/weight",
        "GET /api/progress/weight/current",
        "GET /api/progress/weight/summary",
        "DELETE /api/progress/weight/{id}",
        "POST /api/files/upload/documents",
        "POST /api/files/upload/{kind}",
        "GET /api/files/media/{kind}/{name}",
        "DELETE /api/files/media/{kind}/{name}",
        "GET /api/files/media/stats",
        "GET /api/notifications",
        "POST /api/notifications",
        "GET /api/notifications/count",
        "PUT /api/notifications/mark-all-read",
        "PUT /api/notifications/{id}/read",
        "GET /api/notifications/{id}",
        "DELETE /api/notifications/{id}",
        "GET /api/ws/ws/{user_id}",
        "GET /api/ws/ws/stats",
    ];
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    operations.sort();
    assert_eq!(operations, expected);
}

/// Regression: completions read then write in one transaction; a deferred transaction
/// failed with SQLITE_BUSY (a 500) when another writer committed in between.
fn concurrent_completions_never_fail_with_busy(db: &Db) {
    let s = Server::start_on(db);
    let cast = Cast::new(&s);
    let t = &cast.trainer.token;
    let ex = s
        .post(
            "/api/workouts/exercises",
            t,
            json!({"name": "Row", "muscle_group": "back"}),
        )
        .body["id"]
        .as_i64()
        .unwrap();
    let plan = s
        .post(
            "/api/workouts/plans",
            t,
            json!({"client_id": cast.client.id, "name": "P"}),
        )
        .body["id"]
        .as_i64()
        .unwrap();
    let session = s
        .post(
            &format!("/api/workouts/plans/{plan}/sessions"),
            t,
            json!({"name": "S"}),
        )
        .body["id"]
        .as_i64()
        .unwrap();
    let wex = s
        .post(
            &format!("/api/workouts/sessions/{session}/exercises"),
            t,
            json!({"exercise_id": ex, "order": 1}),
        )
        .body["id"]
        .as_i64()
        .unwrap();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|i| {
                let (s, token) = (&s, &cast.client.token);
                scope.spawn(move || {
                    (0..15)
                        .map(|_| {
                            let r = if i % 2 == 0 {
                                s.post(
                                    "/api/workouts/completions",
                                    token,
                                    json!({"workout_exercise_id": wex, "actual_sets": 3}),
                                )
                            } else {
                                s.post(
                                    "/api/progress/weight",
                                    token,
                                    json!({"date": "2026-01-01", "weight": 80.0}),
                                )
                            };
                            r.status
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert!(statuses.iter().all(|&st| st == 201), "{statuses:?}");
}

/// The original frontend calls collection routes with a trailing slash; both spellings
/// answer the same (query strings kept), and OpenAPI lists only the one without.
fn collection_routes_answer_with_and_without_a_trailing_slash(db: &Db) {
    let s = Server::start_on(db);
    let cast = Cast::new(&s);
    for (path, token) in [
        ("/api/users", &cast.admin.token),
        ("/api/users/clients", &cast.trainer.token),
        ("/api/meal-plans", &cast.trainer.token),
        ("/api/notifications", &cast.client.token),
        ("/api/workouts/exercises", &cast.trainer.token),
        ("/api/workouts/plans", &cast.trainer.token),
        ("/api/progress/weight", &cast.client.token),
    ] {
        let plain = s.get(path, token);
        let slashed = s.get(&format!("{path}/"), token);
        assert_eq!(plain.status, 200, "{path}: {:?}", plain.body);
        assert_eq!(
            (slashed.status, &slashed.body),
            (plain.status, &plain.body),
            "{path}/"
        );
    }
    // Writes too, and the query string survives the rewrite.
    let made = s.post(
        "/api/workouts/exercises/",
        &cast.trainer.token,
        json!({"name": "Slash squat", "muscle_group": "legs"}),
    );
    assert_eq!(made.status, 201, "{:?}", made.body);
    assert_eq!(
        s.get("/api/users/clients/?limit=1000", &cast.admin.token)
            .status,
        422
    );
    // Only one slash is forgiven, the root stays the root, and unknown paths stay 404.
    assert_eq!(s.get("/api/users//", &cast.admin.token).status, 404);
    assert_eq!(s.call("GET", "/", None, None).status, 200);
    assert_eq!(s.get("/api/nope/", &cast.admin.token).status, 404);
    let doc = s.call("GET", "/openapi.json", None, None);
    let paths = doc.body["paths"].as_object().unwrap();
    assert!(paths.contains_key("/api/users"));
    assert!(
        paths.keys().all(|p| p == "/" || !p.ends_with('/')),
        "{paths:?}"
    );
}

/// Requests on one keep-alive connection, hyper's client connection (one connection, no
/// pool), each answer read whole.
struct KeepAlive {
    runtime: tokio::runtime::Runtime,
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
}

impl KeepAlive {
    fn connect(s: &Server) -> KeepAlive {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sender = runtime.block_on(async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
                .await
                .unwrap();
            let (sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .unwrap();
            // Runs while `send` blocks on the runtime.
            tokio::spawn(connection);
            sender
        });
        KeepAlive { runtime, sender }
    }

    /// Sends one JSON request and returns the status of its answer, or None when the
    /// server closed the connection instead.
    fn send(&mut self, method: &str, path: &str, token: &str, body: &str) -> Option<u16> {
        self.send_typed(method, path, token, "application/json", body.as_bytes())
    }

    fn send_typed(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        content_type: &str,
        body: &[u8],
    ) -> Option<u16> {
        use http_body_util::BodyExt;
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", content_type)
            .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(
                body,
            )))
            .unwrap();
        let sender = &mut self.sender;
        self.runtime.block_on(async move {
            sender.ready().await.ok()?;
            let answer = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                sender.send_request(request),
            )
            .await
            .expect("no answer within 10 s");
            let response = answer.ok()?;
            let status = response.status().as_u16();
            response.into_body().collect().await.ok()?;
            Some(status)
        })
    }
}

/// A client that sends a JSON body to an action route whose handler never reads it still
/// gets its next request answered on the same connection: small bodies (hyper discards
/// an unread body it has buffered, about 64 KB) and larger ones up to nginx's 1 MB (the
/// server reads those before the handler runs).
fn unread_bodies_keep_the_connection_usable(db: &Db) {
    let s = Server::start_on(db);
    let cast = Cast::new(&s);
    let body = r#"{"note": "sent by a client that always posts JSON"}"#;
    let large = format!(r#"{{"padding": "{}"}}"#, "x".repeat(200_000));
    let mut conn = KeepAlive::connect(&s);
    for (method, path, token, body) in [
        (
            "PUT",
            "/api/notifications/mark-all-read",
            &cast.client.token,
            body,
        ),
        (
            "POST",
            &format!("/api/users/clients/{}/remove", cast.client.id) as &str,
            &cast.trainer.token,
            body,
        ),
        (
            "POST",
            &format!("/api/users/clients/{}/assign", cast.client.id),
            &cast.trainer.token,
            large.as_str(),
        ),
    ] {
        // 202: assign now invites the client it just removed (issue 15).
        let status = conn.send(method, path, token, body);
        assert!(matches!(status, Some(200 | 202)), "{path}: {status:?}");
        assert_eq!(
            conn.send("GET", "/api/users/me", token, ""),
            Some(200),
            "the connection broke after {method} {path} with a body"
        );
    }
}

/// A refused upload is answered, and the connection still serves the next request, when
/// more of the form follows the file (a note field here): the server reads the rest of the
/// form before it answers, as a connection closed on unread bytes is reset, and a reset can
/// destroy the answer before the client reads it.
fn a_refused_upload_is_answered_whatever_follows_the_file(db: &Db) {
    let s = Server::start_on(db);
    let cast = Cast::new(&s);
    let token = &cast.client.token;
    let boundary = "elior-test-boundary-9c1d";
    let exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(exe);
    form.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n{}\r\n--{boundary}--\r\n",
            "n".repeat(48 * 1024)
        )
        .as_bytes(),
    );
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let mut conn = KeepAlive::connect(&s);
    for attempt in 0..20 {
        assert_eq!(
            conn.send_typed(
                "POST",
                "/api/files/upload/progress_photos",
                token,
                &content_type,
                &form
            ),
            Some(422),
            "attempt {attempt}: the refusal was lost"
        );
        assert_eq!(
            conn.send("GET", "/api/users/me", token, ""),
            Some(200),
            "attempt {attempt}: the connection broke after a refused upload"
        );
    }
}

/// A trainer can't tell ids apart through assign: a missing id, a non-client, a client
/// of another trainer and a deleted client all get the same 404; only an unassigned
/// client is invited (and becomes theirs once they accept). Admins keep the original's answer (403: assigning is a trainer's
/// action; admins use /api/users/trainer/{tid}/clients/{cid}).
fn assign_answers_trainers_the_same_404_for_every_id_they_may_not_claim(db: &Db) {
    let s = Server::start_on(db);
    let cast = Cast::new(&s);
    let assign =
        |id: i64, token: &str| s.action("POST", &format!("/api/users/clients/{id}/assign"), token);
    // A client who was deleted, and one left without a trainer.
    let gone = s.post(
        "/api/auth/register/client",
        &cast.trainer.token,
        json!({"username": "gone", "email": "gone@example.com",
               "password": api_harness::PASSWORD, "full_name": "Gone"}),
    );
    let gone = gone.body["id"].as_i64().unwrap();
    assert_eq!(
        s.delete(&format!("/api/users/{gone}"), &cast.admin.token)
            .status,
        200
    );

    let refused: Vec<(i64, &str)> = vec![
        (999_999, "no such id"),
        (gone, "deleted client"),
        (cast.admin.id, "an admin"),
        (cast.other_trainer.id, "a trainer"),
        (cast.trainer.id, "the trainer themselves"),
        (cast.other_client.id, "another trainer's client"),
    ];
    let first = assign(refused[0].0, &cast.trainer.token);
    assert_eq!(first.status, 404, "{:?}", first.body);
    for (id, what) in &refused {
        let r = assign(*id, &cast.trainer.token);
        assert_eq!((r.status, &r.body), (404, &first.body), "{what}");
        assert_eq!(r.bytes, first.bytes, "{what}: the answers differ");
    }
    // Nothing changed for the other trainer's client.
    let other = s.get(
        &format!("/api/users/{}", cast.other_client.id),
        &cast.admin.token,
    );
    assert_eq!(other.body["trainer_id"], cast.other_trainer.id);

    // An unassigned client is claimed; admins and clients are refused as before.
    let unassign = format!(
        "/api/users/trainer/{}/clients/{}",
        cast.other_trainer.id, cast.other_client.id
    );
    assert_eq!(s.action("DELETE", &unassign, &cast.admin.token).status, 200);
    assert_eq!(assign(cast.other_client.id, &cast.admin.token).status, 403);
    assert_eq!(assign(cast.other_client.id, &cast.client.token).status, 403);
    let invited = assign(cast.other_client.id, &cast.trainer.token);
    assert_eq!(invited.status, 202, "{:?}", invited.body);
    let claimed = s.action(
        "POST",
        &format!("/api/users/me/invitations/{}/accept", cast.trainer.id),
        &cast.other_client.token,
    );
    assert_eq!(claimed.status, 200, "{:?}", claimed.body);
    assert_eq!(claimed.body["trainer_id"], cast.trainer.id);
    // Once claimed, it is another trainer's client to everyone else: the same 404.
    let late = assign(cast.other_client.id, &cast.other_trainer.token);
    assert_eq!((late.status, &late.bytes), (404, &first.bytes));
}

/// Issue 15, revival: a deleted user's token must not authenticate the next user to sign
/// up, on REST or on the WebSocket, before or after a restart (ids are never reused and
/// every token carries its user's random epoch).
fn a_deleted_users_token_never_comes_back(db: &Db) {
    let s = Server::start_on(db);
    let cast = Cast::new(&s);
    let register = |name: &str| -> (i64, String) {
        let r = s.call(
            "POST",
            "/api/auth/register",
            None,
            Some(json!({
                "username": name,
                "email": format!("{name}@example.com"),
                "password": api_harness::PASSWORD,
                "full_name": "Test Person",
            })),
        );
        assert_eq!(r.status, 201, "register {name}: {:?}", r.body);
        (r.body["id"].as_i64().unwrap(), s.login(name))
    };
    let (a_id, a_token) = register("revival_a");
    assert_eq!(s.get("/api/auth/me", &a_token).status, 200);
    let r = s.delete(&format!("/api/users/{a_id}"), &cast.admin.token);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let (b_id, b_token) = register("revival_b");
    assert_ne!(a_id, b_id, "the deleted user's id was handed out again");

    let refused = |s: &Server| {
        for path in ["/api/auth/me", "/api/users/me", "/api/notifications"] {
            let r = s.get(path, &a_token);
            assert_eq!(
                r.status, 401,
                "{path} with the deleted user's token: {:?}",
                r.body
            );
        }
        for id in [a_id, b_id] {
            let mut socket = ws::open(s.port, &format!("/api/ws/ws/{id}?token={a_token}"));
            assert_eq!(ws::close_code(&mut socket), 4002, "WebSocket for user {id}");
        }
        let me = s.get("/api/auth/me", &b_token);
        assert_eq!((me.status, me.body["id"].as_i64()), (200, Some(b_id)));
    };
    refused(&s);
    let s = s.restart(&[]);
    refused(&s);
}

/// `POST /api/auth/logout-all` and a password change end every token of the user (other
/// devices included) and close their open WebSockets; other users are untouched.
fn logout_all_and_password_change_end_every_session(db: &Db) {
    let s = Server::start_on(db);
    let cast = Cast::new(&s);
    let id = cast.client.id;
    let first = cast.client.token.clone();
    let second = s.login("client_a");
    let mut socket = ws::open(s.port, &format!("/api/ws/ws/{id}?token={second}"));
    assert_eq!(ws::next_json(&mut socket)["type"], "connection_established");

    let r = s.action("POST", "/api/auth/logout-all", &first);
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(ws::close_code(&mut socket), 4002);
    for token in [&first, &second] {
        assert_eq!(s.get("/api/auth/me", token).status, 401);
    }
    let mut socket = ws::open(s.port, &format!("/api/ws/ws/{id}?token={second}"));
    assert_eq!(ws::close_code(&mut socket), 4002);
    assert_eq!(s.get("/api/auth/me", &cast.other_client.token).status, 200);

    let old = s.login("client_a");
    let r = s.post(
        "/api/auth/password/change",
        &old,
        json!({"current_password": api_harness::PASSWORD, "new_password": "another-long-password"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(s.get("/api/auth/me", &old).status, 401);
    let fresh = r.body["access_token"].as_str().unwrap();
    assert_eq!(s.get("/api/auth/me", fresh).status, 200);
    assert_eq!(
        s.call("POST", "/api/auth/logout-all", None, None).status,
        401,
        "logout-all needs a token"
    );
}

/// Issue 19: the server remembers the tokens whose signature it checked, and the user's
/// row is still read on every request, so a token that was just accepted stops working as
/// soon as an admin deactivates its user (on reads and writes), and works again once the
/// account is active again (its epoch was not redrawn).
fn a_deactivated_users_remembered_token_is_refused_at_once(db: &Db) {
    let s = Server::start_on(db);
    let cast = Cast::new(&s);
    let token = &cast.client.token;
    let weigh_in = || {
        s.post(
            "/api/progress/weight",
            token,
            json!({"date": "2026-01-02", "weight": 80.5}),
        )
    };
    assert_eq!(s.get("/api/auth/me", token).status, 200);
    assert_eq!(weigh_in().status, 201);

    let url = format!("/api/users/{}", cast.client.id);
    let r = s.put(&url, &cast.admin.token, json!({"is_active": false}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(s.get("/api/auth/me", token).status, 401);
    let r = weigh_in();
    assert_eq!(r.status, 401, "{:?}", r.body);
    assert_eq!(s.get("/api/auth/me", &cast.other_client.token).status, 200);

    let r = s.put(&url, &cast.admin.token, json!({"is_active": true}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(s.get("/api/auth/me", token).status, 200);
}

/// Issue 15: the login lock belongs to the account, not to the string typed. Five wrong
/// passwords by username lock the account for its email too (429 with `Retry-After`, even
/// for the right password), while another account from the same address still logs in.
fn login_lock_is_keyed_by_the_resolved_account(db: &Db) {
    let s = Server::start_on(db);
    let cast = Cast::new(&s);
    let login = |name: &str, password: &str| {
        s.call(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"username": name, "password": password})),
        )
    };
    for attempt in 1..=5 {
        let r = login("client_a", "wrong-password-here");
        assert_eq!(r.status, 401, "attempt {attempt}: {:?}", r.body);
    }
    for password in ["wrong-password-here", api_harness::PASSWORD] {
        let r = login("CLIENT_A@example.com", password);
        assert_eq!(r.status, 429, "by email: {:?}", r.body);
        let wait: u64 = r
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!((1..=300).contains(&wait), "Retry-After {wait}");
        assert_eq!(r.body["retry_after"], wait);
    }
    let form = s.form(
        "/api/auth/token",
        &[
            ("username", "client_a"),
            ("password", api_harness::PASSWORD),
        ],
    );
    assert_eq!(form.status, 429, "the OAuth2 form shares the lock");
    assert!(form.header("retry-after").is_some());
    assert_eq!(login("client_b", api_harness::PASSWORD).status, 200);
    assert_eq!(s.get("/api/auth/me", &cast.client.token).status, 200);
}

/// Public registration is limited per client address (each costs an argon2 hash); the
/// refusal says when to retry.
fn registration_is_throttled_per_address(db: &Db) {
    let s = Server::start_on(db);
    let register = |i: usize| {
        s.call(
            "POST",
            "/api/auth/register",
            None,
            Some(json!({
                "username": format!("signup{i}"),
                "email": format!("signup{i}@example.com"),
                "password": api_harness::PASSWORD,
                "full_name": "Sign Up",
            })),
        )
    };
    for i in 0..api_harness::REGISTRATIONS_PER_ADDRESS {
        assert_eq!(register(i).status, 201, "registration {i}");
    }
    let r = register(api_harness::REGISTRATIONS_PER_ADDRESS);
    assert_eq!(r.status, 429, "{:?}", r.body);
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() > 0);
    assert!(r.body["detail"].as_str().unwrap().contains("registrations"));
}

/// A login names its account in at most 254 bytes (an email address); an attacker's
/// megabyte-long names were kept whole as throttle keys, so each failed login held its
/// name in memory for the window (SQLite) or overflowed PostgreSQL's index entry (a 500
/// that also skipped counting the address). Now each is an ordinary wrong login, counted
/// against the address until it locks, and the server's memory does not grow with them.
fn a_huge_unknown_login_is_a_wrong_login_that_costs_no_memory(db: &Db) {
    let s = Server::start_on_with(db, &crate::harness::server::image_malloc_env());
    let cast = Cast::new(&s);
    let huge_login = |i: usize| {
        let name = format!("{i:02}{}", "x".repeat(1024 * 1024));
        s.call(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"username": name, "password": "wrong-password-here"})),
        )
    };
    // The first one grows the server's buffers to the size of such a request.
    assert_eq!(huge_login(0).status, 401);
    let before = s.heap_kib();
    for i in 1..api_harness::LOGIN_FAILURES_PER_ADDRESS {
        let r = huge_login(i);
        assert_eq!(r.status, 401, "attempt {i}: {:?}", r.body);
        assert_eq!(r.body["detail"], "Incorrect username or password");
    }
    let grown_mib = s.heap_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 8,
        "{} names of 1 MiB grew the server by {grown_mib} MiB",
        api_harness::LOGIN_FAILURES_PER_ADDRESS - 1
    );
    let r = s.call(
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"username": "client_a", "password": api_harness::PASSWORD})),
    );
    assert_eq!(r.status, 429, "the address is locked: {:?}", r.body);
    assert_eq!(s.get("/api/auth/me", &cast.client.token).status, 200);
}

/// Behind a trusted proxy the throttle counts an IPv6 client by its /64, the block every
/// IPv6 subscriber picks addresses from at will: failed logins and registrations from
/// fresh addresses in one /64 share one budget, while the next /64 has its own.
fn one_ipv6_network_is_one_client_to_the_throttle(db: &Db) {
    let s = Server::start_on_with(db, &[("TRUSTED_PROXIES", "127.0.0.1")]);
    let from = |client: String, path: &str, body: Value| {
        s.call_with_headers("POST", path, &[("X-Forwarded-For", &client)], Some(body))
    };
    let login = |client: String, i: usize| {
        from(
            client,
            "/api/auth/login",
            json!({"username": format!("nobody{i}"), "password": "wrong-password-here"}),
        )
    };
    for i in 0..api_harness::LOGIN_FAILURES_PER_ADDRESS {
        let r = login(format!("2001:db8:1:2::{:x}", i + 1), i);
        assert_eq!(r.status, 401, "attempt {i}: {:?}", r.body);
    }
    let r = login("2001:db8:1:2:ffff::9".into(), 99);
    assert_eq!(
        r.status, 429,
        "a fresh address in the same /64: {:?}",
        r.body
    );
    assert_eq!(
        login("2001:db8:1:3::1".into(), 99).status,
        401,
        "the next /64"
    );

    let register = |client: String, i: usize| {
        from(
            client,
            "/api/auth/register",
            json!({
                "username": format!("v6signup{i}"),
                "email": format!("v6signup{i}@example.com"),
                "password": api_harness::PASSWORD,
                "full_name": "Sign Up",
            }),
        )
    };
    for i in 0..api_harness::REGISTRATIONS_PER_ADDRESS {
        let r = register(format!("2001:db8:5:6::{:x}", i + 1), i);
        assert_eq!(r.status, 201, "registration {i}: {:?}", r.body);
    }
    let r = register("2001:db8:5:6:abcd::1".into(), 99);
    assert_eq!(r.status, 429, "{:?}", r.body);
    assert_eq!(register("2001:db8:5:7::1".into(), 100).status, 201);
}

/// A real 1-bit grey PNG of `w` x `h` pixels, all black: tens of KB on the wire, hundreds
/// of MB once decoded.
fn huge_png(w: u32, h: u32) -> Vec<u8> {
    use std::io::Write;
    let row = 1 + w.div_ceil(8) as usize;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; row];
    for _ in 0..h {
        z.write_all(&zeros).unwrap();
    }
    let idat = z.finish().unwrap();
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[1, 0, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &idat);
    chunk(b"IEND", &[]);
    png
}

/// Issue 15: an image's pixel count is checked from its header before anything is
/// decoded: a 12000x12000 PNG is refused with 413 naming the limit; 40 megapixels pass.
#[test]
fn an_image_over_the_pixel_limit_is_refused_before_decoding() {
    let s = Server::start();
    let cast = Cast::new(&s);
    let url = "/api/files/upload/progress_photos";
    let bomb = huge_png(12_000, 12_000);
    assert!(bomb.len() < 1_000_000, "{} bytes", bomb.len());
    let r = s.upload(url, &cast.client.token, "file", "bomb.png", &bomb);
    assert_eq!(r.status, 413, "{:?}", r.body);
    let detail = r.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("12000x12000") && detail.contains("40 megapixels"),
        "{detail}"
    );
    let fine = image_bytes(image::ImageFormat::Png, 64, 48);
    assert_eq!(
        s.upload(url, &cast.client.token, "file", "ok.png", &fine)
            .status,
        201
    );
}

/// The smallest well-formed PDF: one empty page, an xref table and a trailer.
const MINIMAL_PDF: &[u8] = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n\
2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n\
3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 10 10] >> endobj\n\
xref\n0 4\n0000000000 65535 f \n0000000009 00000 n \n0000000058 00000 n \n0000000115 00000 n \n\
trailer << /Size 4 /Root 1 0 R >>\nstartxref\n182\n%%EOF\n";

/// Issue 15: uploads are judged by content. An HTML page behind `%PDF-` is refused; a
/// real PDF is stored and served as a download with nosniff, directly and through the
/// X-Accel-Redirect hand-off (where nginx keeps the API's Content-Disposition and adds
/// nosniff in its internal location).
#[test]
fn pdf_polyglots_are_refused_and_documents_are_downloads() {
    for trusted in ["", "127.0.0.1/32"] {
        let s = Server::start_with(&[("TRUSTED_PROXIES", trusted)]);
        let cast = Cast::new(&s);
        let c = &cast.client.token;
        let url = "/api/files/upload/documents";
        for polyglot in [
            b"%PDF-1.4\n<html><script>alert(document.cookie)</script></html>".to_vec(),
            [
                b"%PDF-1.4\n<!DOCTYPE html><ScRiPt>fetch('/api/users')</ScRiPt>\n".as_slice(),
                &MINIMAL_PDF[9..],
            ]
            .concat(),
        ] {
            let r = s.upload(url, c, "file", "cv.pdf", &polyglot);
            assert_eq!(r.status, 422, "{:?}", r.body);
            assert!(
                r.body["detail"][0]["msg"]
                    .as_str()
                    .unwrap()
                    .starts_with("the file starts like a PDF but"),
                "{:?}",
                r.body
            );
        }
        let r = s.upload(url, c, "file", "cv.pdf", MINIMAL_PDF);
        assert_eq!(r.status, 201, "{:?}", r.body);
        let name = r.body["name"].as_str().unwrap();
        let got = s.get(r.body["url"].as_str().unwrap(), c);
        assert_eq!(got.status, 200);
        assert_eq!(
            got.header("content-disposition"),
            Some(format!("attachment; filename=\"{name}\"").as_str())
        );
        assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(got.header("content-type"), Some("application/pdf"));
        if trusted.is_empty() {
            assert_eq!(got.bytes, MINIMAL_PDF);
        } else {
            assert_eq!(
                got.header("x-accel-redirect"),
                Some(format!("/_protected/uploads/documents/{name}").as_str())
            );
        }
    }
}

/// Issue 15, consent: a trainer who invites an unassigned client sees none of their data
/// (medical notes included) until the client accepts; the client can decline; an admin
/// assigns directly. Admins read any client's notifications; a client cannot ask for
/// another client's exercise progress.
fn a_trainer_needs_the_clients_consent(db: &Db) {
    let s = Server::start_on(db);
    let cast = Cast::new(&s);
    // A self-registered client with medical notes and no trainer.
    let r = s.call(
        "POST",
        "/api/auth/register",
        None,
        Some(json!({"username": "solo", "email": "solo@example.com",
                    "password": api_harness::PASSWORD, "full_name": "Solo"})),
    );
    assert_eq!(r.status, 201);
    let solo_id = r.body["id"].as_i64().unwrap();
    let solo = s.login("solo");
    let notes = s.put(
        "/api/users/me",
        &solo,
        json!({"client_profile": {"medical_conditions": "asthma"}}),
    );
    assert_eq!(notes.status, 200, "{:?}", notes.body);
    let profile = format!("/api/users/{solo_id}");
    let invite = format!("/api/users/clients/{solo_id}/assign");

    let invited = s.action("POST", &invite, &cast.trainer.token);
    assert_eq!(invited.status, 202, "{:?}", invited.body);
    assert_eq!(invited.body["trainer_id"], cast.trainer.id);
    assert_eq!(
        s.action("POST", &invite, &cast.other_trainer.token).status,
        202
    );
    // Invited is not assigned: nothing of the client is visible yet.
    assert_eq!(s.get(&profile, &cast.trainer.token).status, 404);
    let pending = s.get("/api/users/me/invitations", &solo);
    assert_eq!(pending.status, 200);
    assert_eq!(
        pending.body.as_array().unwrap().len(),
        2,
        "{:?}",
        pending.body
    );
    let told = s.get("/api/notifications", &solo);
    assert!(told
        .body
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["type"] == "trainer_invitation"));
    // Only the invited client answers, and only to a real invitation.
    let accept = |trainer: i64, token: &str| {
        s.action(
            "POST",
            &format!("/api/users/me/invitations/{trainer}/accept"),
            token,
        )
    };
    assert_eq!(accept(cast.trainer.id, &cast.client.token).status, 404);
    assert_eq!(accept(cast.trainer.id, &cast.trainer.token).status, 403);
    assert_eq!(accept(cast.admin.id, &solo).status, 404);
    assert_eq!(
        s.delete(
            &format!("/api/users/me/invitations/{}", cast.other_trainer.id),
            &solo
        )
        .status,
        200
    );
    assert_eq!(accept(cast.other_trainer.id, &solo).status, 404, "declined");
    let accepted = accept(cast.trainer.id, &solo);
    assert_eq!(accepted.status, 200, "{:?}", accepted.body);
    let seen = s.get(&profile, &cast.trainer.token);
    assert_eq!(seen.status, 200);
    assert_eq!(seen.body["client_profile"]["medical_conditions"], "asthma");
    assert_eq!(s.get(&profile, &cast.other_trainer.token).status, 404);
    assert!(s
        .get("/api/users/me/invitations", &solo)
        .body
        .as_array()
        .unwrap()
        .is_empty());

    // Admins read a client's notifications; others may not ask for someone else's.
    let theirs = format!("/api/notifications?user_id={solo_id}");
    let admin_view = s.get(&theirs, &cast.admin.token);
    assert_eq!(admin_view.status, 200);
    let note_id = admin_view.body[0]["id"].as_i64().unwrap();
    assert_eq!(s.get(&theirs, &cast.trainer.token).status, 403);
    assert_eq!(s.get(&theirs, &cast.client.token).status, 403);
    assert_eq!(
        s.get(&format!("/api/notifications/{note_id}"), &cast.admin.token)
            .status,
        200
    );
    assert_eq!(
        s.get(&format!("/api/notifications/{note_id}"), &cast.client.token)
            .status,
        404
    );

    // A client naming another client's id for exercise progress is refused, not ignored.
    let ex = s.post(
        "/api/workouts/exercises",
        &cast.trainer.token,
        json!({"name": "Squat", "muscle_group": "legs"}),
    );
    assert_eq!(ex.status, 201, "{:?}", ex.body);
    let progress = |client: i64| {
        format!(
            "/api/workouts/exercises/{}/progress?client_id={client}",
            ex.body["id"]
        )
    };
    assert_eq!(
        s.get(&progress(cast.other_client.id), &cast.client.token)
            .status,
        403
    );
    assert_eq!(
        s.get(&progress(cast.client.id), &cast.client.token).status,
        200
    );
}

/// Issue 15: the OpenAPI document names every status the API answers. Walks every
/// operation of the served document as nobody, a client, a trainer and an admin, with an
/// id that exists and one that does not, and with an empty JSON body where there is one;
/// every status seen must be documented for that operation.
fn every_status_the_api_answers_is_documented(db: &Db) {
    let s = Server::start_on(db);
    let cast = Cast::new(&s);
    let doc = s.call("GET", "/openapi.json", None, None).body;
    let who = [
        ("nobody", None),
        ("client", Some(cast.client.token.as_str())),
        ("trainer", Some(cast.trainer.token.as_str())),
        ("admin", Some(cast.admin.token.as_str())),
    ];
    let mut undocumented = Vec::new();
    let mut calls = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if path.starts_with("/api/ws/ws/{") {
            continue; // a WebSocket upgrade, tested on its own
        }
        for (method, op) in item.as_object().unwrap() {
            let documented: Vec<&str> = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            // Destructive calls last, so the others see the cast intact.
            for id in [cast.client.id.to_string(), "999999".to_string()] {
                let url = path
                    .replace("{kind}", "documents")
                    .replace("{name}", "0123456789abcdef0123456789abcdef.pdf")
                    .replace("{date}", "2026-01-01")
                    .split('/')
                    .map(|seg| {
                        if seg.starts_with('{') {
                            id.as_str()
                        } else {
                            seg
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("/");
                for (label, token) in who {
                    if method == "post" && path == "/api/auth/logout-all" {
                        continue; // would end the cast's sessions
                    }
                    let body = ["post", "put"]
                        .contains(&method.as_str())
                        .then(|| json!({}));
                    let r = s.call(&method.to_uppercase(), &url, token, body);
                    calls += 1;
                    if !documented.contains(&r.status.to_string().as_str()) {
                        undocumented.push(format!(
                            "{} {url} as {label}: {} {} (documented {documented:?})",
                            method.to_uppercase(),
                            r.status,
                            r.body
                        ));
                    }
                }
            }
        }
    }
    assert!(calls > 300, "only {calls} calls");
    assert!(
        undocumented.is_empty(),
        "{} undocumented answers:\n{}",
        undocumented.len(),
        undocumented.join("\n")
    );
}

/// Issue 15: the document carries the enums the API checks (from the same constants),
/// the formats of emails and timestamps, and the lengths registration enforces.
#[test]
fn openapi_has_enums_formats_and_lengths() {
    let s = Server::start();
    let doc = s.call("GET", "/openapi.json", None, None).body;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["Role"]["enum"],
        json!(["ADMIN", "TRAINER", "CLIENT"])
    );
    assert_eq!(
        schemas["MealUpload"]["properties"]["status"]["enum"],
        json!(["pending", "approved", "rejected"])
    );
    assert!(schemas["ComponentFields"]["properties"]["type"]["enum"]
        .as_array()
        .is_some_and(|v| v.contains(&json!("protein"))));
    assert!(schemas["NewNotification"]["properties"]["type"]["enum"]
        .as_array()
        .is_some_and(|v| v.contains(&json!("reminder"))));
    assert_eq!(schemas["User"]["properties"]["email"]["format"], "email");
    assert_eq!(
        schemas["User"]["properties"]["created_at"]["format"],
        "date-time"
    );
    let username = &schemas["Registration"]["properties"]["username"];
    assert_eq!(
        (
            username["minLength"].as_u64(),
            username["maxLength"].as_u64()
        ),
        (Some(3), Some(50))
    );
    let password = &schemas["Registration"]["properties"]["password"];
    assert_eq!(
        (
            password["minLength"].as_u64(),
            password["maxLength"].as_u64()
        ),
        (Some(8), Some(128))
    );
    let login = &doc["paths"]["/api/auth/login"]["post"]["responses"];
    for status in ["200", "401", "422", "429"] {
        assert!(login.get(status).is_some(), "login lacks {status}");
    }
}

/// Every string a request body takes is bounded in the document (a length, a list or a
/// pattern), as the server bounds it: an unbounded field is one a client can fill with
/// the 2 MiB a JSON body may carry, in every row it writes. Passwords and login names are
/// the exceptions; the server keeps neither as sent.
#[test]
fn openapi_bounds_every_string_a_request_body_takes() {
    use std::collections::BTreeSet;
    let s = Server::start();
    let doc = s.call("GET", "/openapi.json", None, None).body;
    let schemas = &doc["components"]["schemas"];
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v.as_str()) {
                        ("$ref", Some(r)) => out.push(r.rsplit('/').next().unwrap().to_string()),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut todo = Vec::new();
    for ops in doc["paths"].as_object().unwrap().values() {
        for op in ops.as_object().unwrap().values() {
            refs(&op["requestBody"], &mut todo);
        }
    }
    let mut seen = BTreeSet::new();
    let mut unbounded = Vec::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let schema = &schemas[&name];
        refs(schema, &mut todo);
        for (field, p) in schema["properties"].as_object().into_iter().flatten() {
            let is_string = p["type"] == "string"
                || p["type"]
                    .as_array()
                    .is_some_and(|t| t.contains(&json!("string")));
            let bounded = ["maxLength", "enum", "pattern"]
                .iter()
                .any(|k| p.get(*k).is_some())
                || ["date", "date-time", "binary", "password"]
                    .contains(&p["format"].as_str().unwrap_or(""));
            let login_name =
                ["Login", "PasswordForm"].contains(&name.as_str()) && field == "username";
            if is_string && !bounded && !login_name {
                unbounded.push(format!("{name}.{field}"));
            }
        }
    }
    assert!(seen.len() > 20, "request schemas found: {seen:?}");
    assert!(
        unbounded.is_empty(),
        "request strings without a bound: {unbounded:?}"
    );
}

/// Issue 15, item 7: the create operations carry OpenAPI links to what takes the new
/// object's id, so a stateful client can walk create -> get -> update -> delete. Every link
/// names an operation that exists, every parameter a path parameter that operation declares,
/// every body field a property of its JSON body, and the id it reads is in the response.
#[test]
fn openapi_links_lead_to_real_operations_and_parameters() {
    let s = Server::start();
    let doc = s.call("GET", "/openapi.json", None, None).body;
    let schemas = &doc["components"]["schemas"];
    // Whether a schema (a `$ref`, or an `allOf` as `#[serde(flatten)]` makes) has a property.
    fn has_property(schemas: &serde_json::Value, schema: &serde_json::Value, name: &str) -> bool {
        let schema = match schema["$ref"].as_str() {
            Some(r) => &schemas[r.rsplit('/').next().unwrap()],
            None => schema,
        };
        schema["properties"].get(name).is_some()
            || schema["allOf"]
                .as_array()
                .is_some_and(|all| all.iter().any(|s| has_property(schemas, s, name)))
    }
    let mut ops = std::collections::HashMap::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            ops.insert(op["operationId"].as_str().unwrap().to_string(), op.clone());
        }
    }
    let mut linked = Vec::new();
    for (id, op) in &ops {
        for (status, response) in op["responses"].as_object().unwrap() {
            let Some(links) = response["links"].as_object() else {
                continue;
            };
            let body = &response["content"]["application/json"]["schema"];
            assert!(
                has_property(schemas, body, "id"),
                "{id} {status}: links read an id its response lacks"
            );
            for (name, link) in links {
                let target = link["operationId"].as_str().unwrap();
                let Some(to) = ops.get(target) else {
                    panic!("{id} {status} link {name}: no operation {target}");
                };
                linked.push(format!("{id}->{target}"));
                for (param, expr) in link["parameters"].as_object().into_iter().flatten() {
                    assert_eq!(expr, "$response.body#/id", "{id} -> {target}");
                    let declared = to["parameters"].as_array().is_some_and(|ps| {
                        ps.iter().any(|p| p["in"] == "path" && p["name"] == *param)
                    });
                    assert!(declared, "{id} -> {target}: no path parameter {param}");
                }
                for (field, expr) in link["requestBody"].as_object().into_iter().flatten() {
                    assert_eq!(expr, "$response.body#/id", "{id} -> {target}");
                    let target_body = &to["requestBody"]["content"]["application/json"]["schema"];
                    assert!(
                        has_property(schemas, target_body, field),
                        "{id} -> {target}: its body has no field {field}"
                    );
                }
            }
        }
    }
    // Every entry of the table the document is built from is in the served document, with
    // the id where the entry puts it, and the document has no link the table lacks.
    use elior::server::openapi::{LinkTo, LINKS};
    let mut listed = 0;
    for (source, status, groups) in LINKS {
        let Some(op) = ops.get(*source) else {
            panic!("LINKS names {source}, which the document lacks");
        };
        let links = &op["responses"][*status]["links"];
        for (target, into) in groups.iter().copied().flatten() {
            let link = &links[*target];
            assert_eq!(
                link["operationId"], *target,
                "{source} {status} -> {target}"
            );
            let (place, name) = match into {
                LinkTo::Path(name) => ("parameters", name),
                LinkTo::Body(name) => ("requestBody", name),
            };
            assert_eq!(
                link[place][*name], "$response.body#/id",
                "{source} -> {target}: the id is not in {place}.{name}"
            );
            listed += 1;
        }
    }
    assert_eq!(
        linked.len(),
        listed,
        "links in the document but not in LINKS"
    );
    // The flows the issue names: users, workout plans and meal plans get created and used.
    for flow in [
        "auth_register_client->users_get_user",
        "auth_register_client->users_delete_user",
        "auth_register_trainer->auth_register_client",
        "auth_register_client->workouts_create_plan",
        "auth_register_client->meal_plans_create_plan",
        "workouts_create_plan->workouts_create_session",
        "workouts_create_session->workouts_add_session_exercise",
        "meal_plans_create_plan->meal_plans_put_plan",
        "meal_plans_create_plan->meal_plans_create_entry",
        "meal_plans_create_entry->meal_plans_create_component",
        "notifications_create->notifications_get_one",
    ] {
        assert!(linked.iter().any(|l| l == flow), "no link {flow}");
    }
}

/// A response that flattens a body type refusing unknown fields (`MealEntry` is `id`,
/// `meal_plan_id` and `EntryFields`) must not carry that refusal into its `allOf`, or its
/// own `id` breaks the schema: an entry the API really returns must validate.
#[test]
fn openapi_flattened_responses_allow_their_own_fields() {
    let s = Server::start();
    let doc = s.call("GET", "/openapi.json", None, None).body;
    let schemas = &doc["components"]["schemas"];
    for name in [
        "MealEntry",
        "MealComponent",
        "WorkoutExercise",
        "Completion",
    ] {
        let all = schemas[name]["allOf"].as_array().unwrap();
        for item in all {
            let item = match item["$ref"].as_str() {
                Some(r) => &schemas[r.rsplit('/').next().unwrap()],
                None => item,
            };
            assert_ne!(
                item["additionalProperties"],
                json!(false),
                "{name}: a part of its allOf refuses the other parts' fields"
            );
        }
    }
    // The request bodies themselves still refuse unknown fields.
    assert_eq!(schemas["EntryFields"]["additionalProperties"], json!(false));
}

/// Issue 15, the document tells the truth: the ranges, lengths and item counts the checks
/// enforce are in the schemas, and a number the document calls an integer is accepted in
/// any JSON spelling of one (`5.0`), as JSON Schema says it may be written.
#[test]
fn documented_limits_match_the_checks_and_integral_numbers_are_integers() {
    let s = Server::start();
    let doc = s.call("GET", "/openapi.json", None, None).body;
    let schemas = &doc["components"]["schemas"];
    let limits = |schema: &str, field: &str, lo: &str, hi: &str| {
        let p = &schemas[schema]["properties"][field];
        (p[lo].as_f64(), p[hi].as_f64())
    };
    assert_eq!(
        limits("MealPlanBody", "total_calories", "minimum", "maximum"),
        (Some(0.0), Some(20000.0))
    );
    assert_eq!(
        limits(
            "TrainerProfile",
            "years_of_experience",
            "minimum",
            "maximum"
        ),
        (Some(0.0), Some(80.0))
    );
    assert_eq!(
        limits(
            "ClientProfile",
            "target_weight",
            "exclusiveMinimum",
            "maximum"
        ),
        (Some(0.0), Some(500.0))
    );
    assert_eq!(
        limits("BulkCompletions", "completions", "minItems", "maxItems"),
        (Some(1.0), Some(100.0))
    );
    assert_eq!(
        limits("NewNotification", "message", "minLength", "maxLength"),
        (Some(1.0), Some(2000.0))
    );
    // A plan's create needs its client; its replace may leave the client out.
    for (path, create, replace) in [
        ("/api/meal-plans", "NewMealPlan", "MealPlanBody"),
        ("/api/workouts/plans", "NewWorkoutPlan", "WorkoutPlanBody"),
    ] {
        let body = &doc["paths"][path]["post"]["requestBody"]["content"]["application/json"];
        assert_eq!(
            body["schema"]["$ref"],
            format!("#/components/schemas/{create}")
        );
        let required = |schema: &str| {
            schemas[schema]["required"]
                .as_array()
                .is_some_and(|r| r.contains(&json!("client_id")))
        };
        assert!(required(create) && !required(replace), "{path}");
    }
    let download = &doc["paths"]["/api/files/media/{kind}/{name}"]["get"]["parameters"];
    let size = download
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "size")
        .unwrap();
    assert_eq!(
        size["schema"]["enum"],
        json!(["original", "thumbnail", "medium"])
    );

    // The limit the document states is the one the server holds...
    let cast = api_harness::Cast::new(&s);
    let over = s.post(
        "/api/auth/register/trainer",
        &cast.admin.token,
        json!({"username": "veteran", "email": "v@example.com", "password": api_harness::PASSWORD,
               "full_name": "V", "years_of_experience": 81}),
    );
    assert_eq!(over.status, 422, "{:?}", over.body);
    // ...and an integer written as 5.0 is an integer; 5.5 is still refused.
    let half = s.post(
        "/api/auth/register/trainer",
        &cast.admin.token,
        json!({"username": "halfyear", "email": "h@example.com", "password": api_harness::PASSWORD,
               "full_name": "H", "years_of_experience": 5.5}),
    );
    assert_eq!(half.status, 422, "{:?}", half.body);
    let whole = s.post(
        "/api/auth/register/trainer",
        &cast.admin.token,
        json!({"username": "fiveyears", "email": "f@example.com", "password": api_harness::PASSWORD,
               "full_name": "F", "years_of_experience": 5.0}),
    );
    assert_eq!(whole.status, 201, "{:?}", whole.body);
    assert_eq!(whole.body["trainer_profile"]["years_of_experience"], 5);
}

/// Issue 15: a request the document calls valid, refused for a reason no schema can see,
/// answers with the status that names the reason instead of a 422 (which says "you could
/// have known from the schema"). An id in the body that names nothing is a 404 naming the
/// field; what the caller's role may not do is a 403; a body at odds with the object it
/// targets (a plan moving to another client, a profile of another role) is a 409. Each
/// refusal leaves everything as it was.
#[test]
fn refusals_a_schema_cannot_express_say_why() {
    let s = Server::start();
    let cast = Cast::new(&s);
    let (admin, t) = (cast.admin.token.as_str(), cast.trainer.token.as_str());
    let new_client = |name: &str, trainer_id: i64| {
        json!({"username": name, "email": format!("{name}@example.com"),
               "password": api_harness::PASSWORD, "full_name": name, "trainer_id": trainer_id})
    };

    // trainer_id must name a trainer: a client's id and an unused one are both absent.
    for not_a_trainer in [cast.client.id, 999_999] {
        let r = s.post(
            "/api/auth/register/client",
            admin,
            new_client("orphan", not_a_trainer),
        );
        assert_eq!(r.status, 404, "{:?}", r.body);
        assert_eq!(r.body["detail"], "trainer_id: names no trainer");
    }
    // Only an admin chooses the trainer.
    let r = s.post(
        "/api/auth/register/client",
        t,
        new_client("poached", cast.other_trainer.id),
    );
    assert_eq!(r.status, 403, "{:?}", r.body);
    // Neither refusal made an account: the names are still free.
    for name in ["orphan", "poached"] {
        let r = s.post(
            "/api/auth/register/client",
            admin,
            new_client(name, cast.trainer.id),
        );
        assert_eq!(r.status, 201, "{name}: {:?}", r.body);
    }

    // exercise_id must name an exercise of the library, on add and on replace.
    let squat = s.post(
        "/api/workouts/exercises",
        t,
        json!({"name": "Squat", "muscle_group": "legs"}),
    );
    let squat = squat.body["id"].as_i64().unwrap();
    let plan = s.post(
        "/api/workouts/plans",
        t,
        json!({"client_id": cast.client.id, "name": "Base"}),
    );
    assert_eq!(plan.status, 201, "{:?}", plan.body);
    let plan_url = format!("/api/workouts/plans/{}", plan.body["id"]);
    let session = s.post(
        &format!("{plan_url}/sessions"),
        t,
        json!({"name": "Mon", "day_of_week": 0}),
    );
    let exercises = format!("/api/workouts/sessions/{}/exercises", session.body["id"]);
    let r = s.post(&exercises, t, json!({"exercise_id": 999_999, "order": 1}));
    assert_eq!(r.status, 404, "{:?}", r.body);
    assert_eq!(r.body["detail"], "exercise_id: names no exercise");
    assert_eq!(s.get(&exercises, t).body, json!([]));
    let added = s.post(&exercises, t, json!({"exercise_id": squat, "order": 1}));
    assert_eq!(added.status, 201, "{:?}", added.body);
    let wex = format!("/api/workouts/workout-exercises/{}", added.body["id"]);
    let r = s.put(&wex, t, json!({"exercise_id": 999_999, "order": 2}));
    assert_eq!(r.status, 404, "{:?}", r.body);
    assert_eq!(s.get(&wex, t).body["exercise_id"], squat);
    assert_eq!(s.get(&wex, t).body["order"], 1);

    // A plan never moves to another client: 409, and the plan is unchanged. Naming its own
    // client is fine.
    let meal_plan = s.post(
        "/api/meal-plans",
        t,
        json!({"client_id": cast.client.id, "date": "2026-02-02", "title": "Day"}),
    );
    assert_eq!(meal_plan.status, 201, "{:?}", meal_plan.body);
    let meal_url = format!("/api/meal-plans/{}", meal_plan.body["id"]);
    for (url, body) in [
        (&plan_url, json!({"name": "Moved"})),
        (&meal_url, json!({"date": "2026-02-02", "title": "Moved"})),
    ] {
        let mut moved = body.clone();
        moved["client_id"] = json!(cast.other_client.id);
        let r = s.put(url, admin, moved);
        assert_eq!(r.status, 409, "{url}: {:?}", r.body);
        let now = s.get(url, admin).body;
        assert_eq!(now["client_id"], cast.client.id, "{url}");
        assert_ne!(
            now["name"].as_str().or(now["title"].as_str()),
            Some("Moved")
        );
        let mut kept = body;
        kept["client_id"] = json!(cast.client.id);
        assert_eq!(s.put(url, admin, kept).status, 200, "{url}");
    }

    // Staff leaving out client_id ask for their own progress, which only clients have.
    let progress_reads = [
        "/api/progress/weight".to_string(),
        "/api/progress/weight/current".to_string(),
        "/api/progress/weight/summary".to_string(),
        format!("/api/workouts/exercises/{squat}/progress"),
    ];
    for staff in [admin, t] {
        for url in &progress_reads {
            let r = s.get(url, staff);
            assert_eq!(r.status, 403, "{url}: {:?}", r.body);
            assert!(r.body["detail"].as_str().unwrap().contains("client_id"));
        }
        let r = s.post(
            "/api/progress/weight",
            staff,
            json!({"date": "2026-01-01", "weight": 80.0}),
        );
        assert_eq!(r.status, 403, "{:?}", r.body);
    }
    let own = s.get("/api/progress/weight", &cast.client.token);
    assert_eq!((own.status, own.body.clone()), (200, json!([])));
    let theirs = format!("/api/progress/weight?client_id={}", cast.client.id);
    assert_eq!(s.get(&theirs, t).body, json!([]));

    // A profile for another role than the user's conflicts with the user: 409, and nothing
    // of the update is applied.
    let client_url = format!("/api/users/{}", cast.client.id);
    let trainer_url = format!("/api/users/{}", cast.trainer.id);
    let before = s.get(&client_url, admin).body;
    for (url, body) in [
        (
            client_url.as_str(),
            json!({"full_name": "Renamed", "trainer_profile": {"bio": "x"}}),
        ),
        (
            trainer_url.as_str(),
            json!({"full_name": "Renamed", "client_profile": {"goals": "x"}}),
        ),
        ("/api/users/me", json!({"trainer_profile": {"bio": "x"}})),
    ] {
        let r = s.put(url, admin, body);
        assert_eq!(r.status, 409, "{url}: {:?}", r.body);
    }
    assert_eq!(s.get(&client_url, admin).body, before);
    assert_ne!(s.get(&trainer_url, admin).body["full_name"], "Renamed");

    // What a role may change: 403, and the account is untouched.
    let r = s.put("/api/users/me", admin, json!({"is_active": false}));
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(s.get("/api/users/me", admin).status, 200);
    for body in [
        json!({"is_active": false}),
        json!({"email": "taken-over@example.com"}),
    ] {
        let r = s.put(&client_url, t, body);
        assert_eq!(r.status, 403, "{:?}", r.body);
    }
    assert_eq!(s.get(&client_url, admin).body, before);
    assert_eq!(s.get("/api/users/me", &cast.client.token).status, 200);
}

/// Issue 15: the upload operations list, in their `file` part's `encoding`, the media
/// types the server accepts by content, and a file of each listed type is accepted; the
/// photo upload's `kind` leaves out documents, which have an operation of their own.
#[test]
fn upload_operations_document_the_types_they_take() {
    let s = Server::start();
    let cast = Cast::new(&s);
    let c = &cast.client.token;
    let doc = s.call("GET", "/openapi.json", None, None).body;
    let encoding = |path: &str| -> Vec<String> {
        doc["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["encoding"]
            ["file"]["contentType"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: no encoding for file"))
            .split(", ")
            .map(str::to_string)
            .collect()
    };
    let images = encoding("/api/files/upload/{kind}");
    assert_eq!(
        images,
        ["image/jpeg", "image/png", "image/webp", "image/gif"]
    );
    assert_eq!(encoding("/api/meal-plans/uploads/{id}/photo"), images);
    assert_eq!(encoding("/api/files/upload/documents"), ["application/pdf"]);
    let kinds = &doc["paths"]["/api/files/upload/{kind}"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "kind")
        .unwrap()["schema"]["enum"];
    assert_eq!(
        *kinds,
        json!([
            "meal_photos",
            "progress_photos",
            "form_photos",
            "profile_photos"
        ])
    );

    for kind in kinds.as_array().unwrap() {
        let url = format!("/api/files/upload/{}", kind.as_str().unwrap());
        for media_type in &images {
            let format = image::ImageFormat::from_mime_type(media_type).unwrap();
            let r = s.upload(&url, c, "file", "x", &image_bytes(format, 3, 2));
            assert_eq!(r.status, 201, "{url} {media_type}: {:?}", r.body);
            assert_eq!(r.body["content_type"], *media_type);
        }
        // A PDF is not one of the types listed here.
        assert_eq!(s.upload(&url, c, "file", "x", MINIMAL_PDF).status, 422);
    }
    let documents = "/api/files/upload/documents";
    let r = s.upload(documents, c, "file", "x", MINIMAL_PDF);
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["content_type"], "application/pdf");
    let png = image_bytes(image::ImageFormat::Png, 3, 2);
    assert_eq!(s.upload(documents, c, "file", "x", &png).status, 422);
}

/// Issue 15: the document's "not blank" pattern and the server's trim agree on every
/// character: a name of one whitespace character (as Rust's `char::is_whitespace` has it,
/// U+0085 included, which ECMA-262's `\s` leaves out) is outside the pattern and refused;
/// a name of a character the pattern allows (U+FEFF, U+200B, which `\s` or trim treat
/// differently) is accepted.
#[test]
fn the_not_blank_pattern_is_the_servers_trim() {
    let s = Server::start();
    let cast = Cast::new(&s);
    let t = &cast.trainer.token;
    let doc = s.call("GET", "/openapi.json", None, None).body;
    let pattern = doc["components"]["schemas"]["WorkoutPlanBody"]["properties"]["name"]["pattern"]
        .as_str()
        .unwrap()
        .to_string();
    // `[^\uXXXX...]`: the characters a name may not consist of alone.
    let excluded: Vec<char> = pattern
        .strip_prefix("[^")
        .and_then(|p| p.strip_suffix(']'))
        .unwrap_or_else(|| panic!("not a negated class: {pattern}"))
        .split("\\u")
        .filter(|hex| !hex.is_empty())
        .map(|hex| char::from_u32(u32::from_str_radix(hex, 16).unwrap()).unwrap())
        .collect();
    assert!(excluded.contains(&'\u{85}') && excluded.contains(&' '));
    let plan = s.post(
        "/api/workouts/plans",
        t,
        json!({"client_id": cast.client.id, "name": "Base"}),
    );
    let plan_url = format!("/api/workouts/plans/{}", plan.body["id"]);
    for c in excluded
        .iter()
        .copied()
        .chain(['\u{feff}', '\u{200b}', '\u{1c}', 'x'])
    {
        let r = s.put(&plan_url, t, json!({"name": c.to_string()}));
        let blank = excluded.contains(&c);
        assert_eq!(
            r.status,
            if blank { 422 } else { 200 },
            "U+{:04X}: {:?}",
            u32::from(c),
            r.body
        );
    }
}

/// A full data disk: writes and uploads are answered 503 with `Retry-After: 60` and a
/// body that says why (they were 500s), nothing of them is kept, and once space is freed
/// the same server takes writes again, without a restart.
#[test]
fn a_full_disk_answers_writes_503_and_they_resume_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let disk = crate::harness::tmpfs::TmpfsMount::new(&root, "8m");
    let s = Server::start_in(dir, &[]);
    let cast = Cast::new(&s);
    let c = &cast.client.token;
    let entry = |day: u32| {
        let date = format!("2026-01-{day:02}");
        json!({"date": date, "weight": 80.0, "notes": "x".repeat(900)})
    };
    assert_eq!(s.post("/api/progress/weight", c, entry(1)).status, 201);

    let filler = disk.fill();
    // SQLite may still fit a few writes into the WAL's pages; then it needs new ones.
    let mut saved = 1;
    let full = (2..=28)
        .map(|day| s.post("/api/progress/weight", c, entry(day)))
        .find(|r| {
            assert!(matches!(r.status, 201 | 503), "{} {:?}", r.status, r.body);
            saved += usize::from(r.status == 201);
            r.status == 503
        })
        .expect("a write on a full disk is refused");
    assert_eq!(full.header("retry-after"), Some("60"));
    let detail = full.body["detail"].as_str().unwrap();
    assert!(detail.contains("storage is full"), "{detail}");
    let png = image_bytes(image::ImageFormat::Png, 64, 64);
    let photo = "/api/files/upload/progress_photos";
    let up = s.upload(photo, c, "file", "p.png", &png);
    assert_eq!(up.status, 503, "{:?}", up.body);
    assert_eq!(up.header("retry-after"), Some("60"));

    std::fs::remove_file(&filler).unwrap();
    let mut later = entry(1);
    later["date"] = json!("2026-02-01");
    let again = s.post("/api/progress/weight", c, later);
    assert_eq!(again.status, 201, "{:?}", again.body);
    let up = s.upload(photo, c, "file", "p.png", &png);
    assert_eq!(up.status, 201, "{:?}", up.body);
    let list = s.get("/api/progress/weight?limit=100", c);
    assert_eq!(
        list.body.as_array().unwrap().len(),
        saved + 1,
        "{:?}",
        list.body
    );
}
