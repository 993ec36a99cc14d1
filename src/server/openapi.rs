//! The OpenAPI 3 document served at `/openapi.json`. Paths come from the
//! `#[utoipa::path]` attribute of each handler, and the same attribute registers the route
//! (through `utoipa_axum::routes!`), so the document and the router can't drift. This module
//! holds only the document's frame and the schemas shared by every route.

use axum::extract::DefaultBodyLimit;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::UtoipaMethodRouter;

use super::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Elior Fitness API",
        description = "Trainers plan workouts and meals for their clients; clients log sessions, meals, weight and photos. \
                       A client sees their own data, a trainer their own clients', an admin everything; \
                       another owner's object answers 404.",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth"), (name = "users"), (name = "workouts"), (name = "meal-plans"),
        (name = "progress"), (name = "files"), (name = "notifications"), (name = "system"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// `{"detail": "message"}`, the body of every 4xx but 422.
#[derive(ToSchema)]
pub struct ErrorBody {
    pub detail: String,
}

/// One bad field of a 422.
#[derive(ToSchema)]
pub struct FieldErrorSchema {
    /// Where: `["body", "field"]`, `["query", "limit"]`, `["path"]`.
    pub loc: Vec<String>,
    pub msg: String,
    #[schema(rename = "type")]
    pub kind: String,
}

/// `{"detail": [{"loc", "msg", "type"}]}`.
#[derive(ToSchema)]
pub struct ValidationErrorBody {
    pub detail: Vec<FieldErrorSchema>,
}

/// A multipart upload: the file in field `file` (or `image`).
#[derive(ToSchema)]
pub struct UploadForm {
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// Applies a layer (e.g. a body limit) to the method router of documented routes.
pub fn layered(
    (schemas, paths, router): UtoipaMethodRouter<AppState>,
    layer: DefaultBodyLimit,
) -> UtoipaMethodRouter<AppState> {
    (schemas, paths, router.layer(layer))
}
