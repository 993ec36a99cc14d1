//! The Elior Fitness API over HTTP against the real `elior serve`: the role matrix for
//! each resource, the three full flows of issue 8, the WebSocket, upload rejections and
//! the OpenAPI document.

mod common;

use common::{matrix, Cast, Server};
use serde_json::json;

#[test]
fn users_role_matrix_and_assignment() {
    let s = Server::start();
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
    assert_eq!(s.post("/api/auth/register/trainer", &cast.trainer.token, json!({"username": "sneaky", "email": "s@example.com", "password": common::PASSWORD, "full_name": "S"})).status, 403);

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
    assert_eq!(s.action("POST", &assign, &cast.trainer.token).status, 200);
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
#[test]
fn trainer_builds_plan_and_client_completes_it() {
    let s = Server::start();
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
    assert_eq!(refused.status, 422);

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
    matrix(&s, &cast, "GET plans list size", [200; 5], |tok| {
        s.get("/api/workouts/plans", tok)
    });
    assert!(s
        .get("/api/workouts/plans", &cast.other_client.token)
        .body
        .as_array()
        .unwrap()
        .is_empty());
    assert!(s
        .get("/api/workouts/plans", &cast.other_trainer.token)
        .body
        .as_array()
        .unwrap()
        .is_empty());

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
        422
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
