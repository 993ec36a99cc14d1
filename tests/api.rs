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
    assert_eq!(
        s.post(&reassign, &cast.trainer.token, json!({})).status,
        403
    );
    assert_eq!(s.post(&reassign, &cast.admin.token, json!({})).status, 200);
    assert_eq!(s.get(&client, &cast.trainer.token).status, 404);
    assert_eq!(s.get(&client, &cast.other_trainer.token).status, 200);
    // The new trainer lets go; the old one claims the unassigned client.
    let remove = format!("/api/users/clients/{}/remove", cast.client.id);
    assert_eq!(s.post(&remove, &cast.trainer.token, json!({})).status, 404);
    assert_eq!(
        s.post(&remove, &cast.other_trainer.token, json!({})).status,
        200
    );
    let assign = format!("/api/users/clients/{}/assign", cast.client.id);
    assert_eq!(s.post(&assign, &cast.trainer.token, json!({})).status, 200);
    assert_eq!(
        s.post(&assign, &cast.other_trainer.token, json!({})).status,
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
