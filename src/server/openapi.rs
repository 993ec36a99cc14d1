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
    components(schemas(ErrorBody, ValidationErrorBody, FieldErrorSchema)),
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

/// Adds the error answers every operation shares, so each handler's attribute lists only
/// its own success and its own refusals (409, 429): 401/403/404 where a token is needed,
/// 422 where there is input, 400/408/413 where there is a body, and 414/431/500/503
/// everywhere (issue 15: a client must find every status it can get in the document).
/// Applied by [`super::api`] once the routes' paths are in: as an `#[openapi(modifiers)]`
/// entry it ran on the frame alone, before any path existed, and added nothing.
pub struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let answer = |description: &str, schema: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(schema)))
                        .build(),
                )
                .build()
        };
        for op in operations_mut(openapi) {
            let mut errors = Vec::new();
            if op.security.is_some() {
                errors.extend([
                    ("401", "Missing or invalid token"),
                    ("403", "Role not allowed"),
                    (
                        "404",
                        "Absent, not the caller's to see, or an id in the body names nothing (the detail names the field)",
                    ),
                ]);
            }
            errors.extend([
                ("414", "The request target is over 8 KiB"),
                ("431", "The request headers are over 16 KiB"),
                (
                    "500",
                    "Internal error; the log has it under the X-Request-ID",
                ),
                ("503", "The database is busy or unavailable; retry"),
            ]);
            if op.request_body.is_some() {
                errors.extend([
                    ("400", "The request body could not be read"),
                    ("408", "The request body stopped arriving"),
                    (
                        "413",
                        "The request body (or an image's pixel count) is over the limit",
                    ),
                ]);
            }
            let responses = &mut op.responses.responses;
            for (code, description) in errors {
                responses
                    .entry(code.into())
                    .or_insert_with(|| answer(description, "ErrorBody").into());
            }
            if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) || op.request_body.is_some() {
                responses.entry("422".into()).or_insert_with(|| {
                    answer(
                        "Invalid input, one entry per bad field",
                        "ValidationErrorBody",
                    )
                    .into()
                });
            }
        }
    }
}

/// Enums for the string fields the API checks against a fixed list (issue 15), taken from
/// the same constants the checks use, so the document cannot drift from them. A field that
/// is `Option<String>` is a `oneOf` (or has a `null` type) in the document; both forms get
/// the list. Applied by [`super::api`] with [`CommonErrors`].
pub struct Enums;

impl Modify for Enums {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use crate::server::routes::notifications::KINDS;
        let muscles = crate::db::workouts::MUSCLE_GROUPS;
        let fields: [(&str, &str, &[&str]); 6] = [
            ("ExerciseFields", "muscle_group", muscles),
            ("Exercise", "muscle_group", muscles),
            ("ComponentFields", "type", crate::db::meals::COMPONENT_TYPES),
            ("MealUpload", "status", &["pending", "approved", "rejected"]),
            ("Review", "status", &["approved", "rejected"]),
            ("NewNotification", "type", KINDS),
        ];
        if let Some(components) = openapi.components.as_mut() {
            for (schema, property, values) in fields {
                if let Some(utoipa::openapi::RefOr::T(utoipa::openapi::Schema::Object(object))) =
                    components.schemas.get_mut(schema)
                {
                    if let Some(utoipa::openapi::RefOr::T(field)) =
                        object.properties.get_mut(property)
                    {
                        set_enum(field, values);
                    }
                }
            }
        }
        // Query and path parameters checked the same way.
        let kinds: Vec<&str> = crate::files::Kind::ALL.iter().map(|k| k.as_str()).collect();
        let params: [(&str, &[&str]); 4] = [
            ("muscle_group", muscles),
            ("role", &["ADMIN", "TRAINER", "CLIENT"]),
            ("size", crate::files::Size::NAMES),
            ("kind", &kinds),
        ];
        for op in operations_mut(openapi) {
            for (name, values) in params {
                set_parameter_enum(op, name, values);
            }
        }
    }
}

/// A text the server trims must hold a character that is not whitespace. The attributes
/// say `pattern = "\\S"`, but `\s` means other sets in the engines a client uses: ECMA-262
/// (JSON Schema) leaves out U+0085, which Rust's `str::trim` removes, so `"\u{85}"` was
/// schema-valid and refused as blank (found by schemathesis, issue 15). Each `\S` pattern is
/// replaced by the class of every character that is not `char::is_whitespace`, built from
/// Rust's own definition so the two cannot differ. Applied by [`super::api`] before the
/// modifiers that copy schemas ([`CreateBodies`], [`FlattenedBodies`]).
pub struct NonBlank;

/// The character class [`NonBlank`] writes for `\S`.
pub fn non_blank_pattern() -> String {
    let escaped: String = (char::MIN..=char::MAX)
        .filter(|c| c.is_whitespace())
        .map(|c| format!("\\u{:04x}", u32::from(c)))
        .collect();
    format!("[^{escaped}]")
}

impl Modify for NonBlank {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::ArrayItems;
        use utoipa::openapi::{RefOr, Schema};
        fn walk(schema: &mut Schema, pattern: &str) {
            match schema {
                Schema::Object(object) => {
                    if object.pattern.as_deref() == Some("\\S") {
                        object.pattern = Some(pattern.to_string());
                    }
                    for property in object.properties.values_mut() {
                        if let RefOr::T(property) = property {
                            walk(property, pattern);
                        }
                    }
                }
                Schema::Array(array) => {
                    if let ArrayItems::RefOrSchema(items) = &mut array.items {
                        if let RefOr::T(items) = items.as_mut() {
                            walk(items, pattern);
                        }
                    }
                }
                Schema::OneOf(one_of) => one_of.items.iter_mut().for_each(|i| walk_ref(i, pattern)),
                Schema::AllOf(all_of) => all_of.items.iter_mut().for_each(|i| walk_ref(i, pattern)),
                Schema::AnyOf(any_of) => any_of.items.iter_mut().for_each(|i| walk_ref(i, pattern)),
                _ => {}
            }
        }
        fn walk_ref(schema: &mut RefOr<Schema>, pattern: &str) {
            if let RefOr::T(schema) = schema {
                walk(schema, pattern);
            }
        }
        let pattern = non_blank_pattern();
        for schema in openapi
            .components
            .iter_mut()
            .flat_map(|c| c.schemas.values_mut())
        {
            walk_ref(schema, &pattern);
        }
    }
}

/// The media types each upload operation takes in its `file` part, as the server sniffs
/// them: the image kinds take images, documents take PDFs ([`crate::files::check`]). The
/// document says so with the part's `encoding` (issue 15: a client that generates bodies
/// sends a file of a listed type; bytes of another type are a 422). The photo upload's
/// `kind` lists only the image kinds: documents have their own operation.
/// Applied by [`super::api`] after [`Enums`].
pub struct Uploads;

impl Modify for Uploads {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use crate::files::{Detected, Kind};
        use utoipa::openapi::encoding::EncodingBuilder;
        use utoipa::openapi::RefOr;
        // Every type the sniffer knows, by the extension it stores under.
        let detected: Vec<Detected> = ["jpg", "png", "webp", "gif", "pdf"]
            .into_iter()
            .filter_map(Detected::from_ext)
            .collect();
        let types = |images: bool| {
            detected
                .iter()
                .filter(|d| d.is_image() == images)
                .map(|d| d.content_type())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let image_kinds: Vec<&str> = Kind::ALL
            .into_iter()
            .filter(|k| k.takes_images())
            .map(Kind::as_str)
            .collect();
        let uploads = [
            ("files_upload", types(true)),
            ("files_upload_document", types(false)),
            ("meal_plans_upload_photo", types(true)),
        ];
        for op in operations_mut(openapi) {
            let Some((id, accepted)) = uploads
                .iter()
                .find(|(id, _)| op.operation_id.as_deref() == Some(*id))
            else {
                continue;
            };
            if let Some(RefOr::T(body)) = op.request_body.as_mut() {
                for content in body.content.values_mut() {
                    let RefOr::T(content) = content else {
                        continue;
                    };
                    content.encoding.insert(
                        "file".into(),
                        EncodingBuilder::new()
                            .content_type(Some(accepted.clone()))
                            .build(),
                    );
                }
            }
            if *id == "files_upload" {
                set_parameter_enum(op, "kind", &image_kinds);
            }
        }
    }
}

/// One body type serves a plan's create (`POST`) and its replace (`PUT`), where `client_id`
/// is required on create and may be left out on replace (it can't change). A schema can't
/// say "required on POST only", so the create operations get their own copy of the schema
/// with `client_id` a required integer (issue 15: a schema-valid request must be accepted).
/// Applied by [`super::api`] with [`CommonErrors`].
pub struct CreateBodies;

impl Modify for CreateBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{Content, Ref, RefOr, Schema};
        let creates = [
            ("/api/meal-plans", "MealPlanBody", "NewMealPlan"),
            ("/api/workouts/plans", "WorkoutPlanBody", "NewWorkoutPlan"),
        ];
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for (path, body, new) in creates {
            let Some(RefOr::T(Schema::Object(shared))) = components.schemas.get(body) else {
                continue;
            };
            let mut create = shared.clone();
            let client_id = ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                    utoipa::openapi::KnownFormat::Int64,
                )))
                .description(Some("The client the plan is for."))
                .build();
            create
                .properties
                .insert("client_id".into(), RefOr::T(Schema::Object(client_id)));
            if !create.required.iter().any(|r| r == "client_id") {
                create.required.push("client_id".into());
            }
            components
                .schemas
                .insert(new.into(), RefOr::T(Schema::Object(create)));
            let post = openapi
                .paths
                .paths
                .get_mut(path)
                .and_then(|item| item.post.as_mut())
                .and_then(|op| op.request_body.as_mut());
            if let Some(RefOr::T(body)) = post {
                for content in body.content.values_mut() {
                    *content = RefOr::T(Content::new(Some(Ref::from_schema_name(new))));
                }
            }
        }
    }
}

/// A response type that flattens a body type (`MealEntry` is `id`, `meal_plan_id` and the
/// `EntryFields` a client sends) is documented as `allOf` the body's schema and its own
/// fields. A body that refuses unknown fields has `additionalProperties: false`, which inside
/// the `allOf` refused the response's own `id` too: every such response broke its schema
/// (found by the stateful run once links created entries, components and session exercises).
/// The response gets an inline copy of the body's schema without that refusal.
/// Applied by [`super::api`] with [`CommonErrors`].
pub struct FlattenedBodies;

impl Modify for FlattenedBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, Schema};
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let closed = |schema: &RefOr<Schema>| -> Option<Schema> {
            let RefOr::Ref(r) = schema else {
                return None;
            };
            let name = r.ref_location.rsplit('/').next()?;
            match components.schemas.get(name) {
                Some(RefOr::T(Schema::Object(object)))
                    if matches!(
                        object.additional_properties.as_deref(),
                        Some(utoipa::openapi::schema::AdditionalProperties::FreeForm(
                            false
                        ))
                    ) =>
                {
                    let mut open = object.clone();
                    open.additional_properties = None;
                    Some(Schema::Object(open))
                }
                _ => None,
            }
        };
        let mut fixes = Vec::new();
        for (name, schema) in &components.schemas {
            if let RefOr::T(Schema::AllOf(all)) = schema {
                for (i, item) in all.items.iter().enumerate() {
                    if let Some(open) = closed(item) {
                        fixes.push((name.clone(), i, open));
                    }
                }
            }
        }
        for (name, i, open) in fixes {
            if let Some(RefOr::T(Schema::AllOf(all))) = components.schemas.get_mut(&name) {
                all.items[i] = RefOr::T(open);
            }
        }
    }
}

/// Where a link puts the `id` of the object a create answered with: a path parameter of
/// the linked operation, or a field of its JSON body (merged into the generated body).
#[derive(Clone, Copy)]
pub enum LinkTo {
    Path(&'static str),
    Body(&'static str),
}

/// The operations a link leads to, and where each puts the new id.
type Targets = &'static [(&'static str, LinkTo)];

/// A new user's own operations, which take its id in the path.
const USER: Targets = &[
    ("users_get_user", LinkTo::Path("id")),
    ("users_put_user", LinkTo::Path("id")),
    ("users_delete_user", LinkTo::Path("id")),
];

/// The creates whose body names the client they are for.
const FOR_CLIENT: Targets = &[
    ("workouts_create_plan", LinkTo::Body("client_id")),
    ("meal_plans_create_plan", LinkTo::Body("client_id")),
    ("progress_create", LinkTo::Body("client_id")),
];

/// The create → get → update → delete flows (issue 15, item 7): for each create operation
/// and its success status, the operations that take the new object's `id` (in groups). A
/// stateful client (schemathesis) follows these instead of guessing, and the body links
/// hand it the id of a client or trainer that exists, which a plan's `client_id` or a
/// client's `trainer_id` must name (a rule a schema cannot express).
pub const LINKS: &[(&str, &str, &[Targets])] = {
    use LinkTo::{Body, Path};
    &[
        ("auth_register", "201", &[USER, FOR_CLIENT]),
        (
            "auth_register_trainer",
            "201",
            &[USER, &[("auth_register_client", Body("trainer_id"))]],
        ),
        ("auth_register_client", "201", &[USER, FOR_CLIENT]),
        (
            "workouts_create_exercise",
            "201",
            &[&[
                ("workouts_get_exercise", Path("id")),
                ("workouts_put_exercise", Path("id")),
                ("workouts_delete_exercise", Path("id")),
                ("workouts_exercise_progress", Path("id")),
                ("workouts_add_session_exercise", Body("exercise_id")),
            ]],
        ),
        (
            "workouts_create_plan",
            "201",
            &[&[
                ("workouts_get_plan", Path("id")),
                ("workouts_put_plan", Path("id")),
                ("workouts_delete_plan", Path("id")),
                ("workouts_complete_plan", Path("id")),
                ("workouts_plan_summary", Path("id")),
                ("workouts_list_sessions", Path("id")),
                ("workouts_create_session", Path("id")),
            ]],
        ),
        (
            "workouts_create_session",
            "201",
            &[&[
                ("workouts_get_session", Path("id")),
                ("workouts_put_session", Path("id")),
                ("workouts_delete_session", Path("id")),
                ("workouts_list_session_exercises", Path("id")),
                ("workouts_add_session_exercise", Path("id")),
            ]],
        ),
        (
            "workouts_add_session_exercise",
            "201",
            &[&[
                ("workouts_get_workout_exercise", Path("id")),
                ("workouts_put_workout_exercise", Path("id")),
                ("workouts_delete_workout_exercise", Path("id")),
            ]],
        ),
        (
            "meal_plans_create_plan",
            "201",
            &[&[
                ("meal_plans_get_plan", Path("id")),
                ("meal_plans_put_plan", Path("id")),
                ("meal_plans_delete_plan", Path("id")),
                ("meal_plans_complete_plan", Path("id")),
                ("meal_plans_create_entry", Path("id")),
            ]],
        ),
        (
            "meal_plans_create_entry",
            "201",
            &[&[
                ("meal_plans_get_entry", Path("id")),
                ("meal_plans_put_entry", Path("id")),
                ("meal_plans_delete_entry", Path("id")),
                ("meal_plans_create_component", Path("id")),
            ]],
        ),
        (
            "meal_plans_create_component",
            "201",
            &[&[
                ("meal_plans_get_component", Path("id")),
                ("meal_plans_put_component", Path("id")),
                ("meal_plans_delete_component", Path("id")),
            ]],
        ),
        // Only the recipient marks read or deletes a notification, and its sender (a trainer
        // or an admin) is not the recipient: those would be links to a 404.
        (
            "notifications_create",
            "201",
            &[&[("notifications_get_one", Path("id"))]],
        ),
        (
            "progress_create",
            "201",
            &[&[("progress_remove", Path("id"))]],
        ),
    ]
};

/// Puts [`LINKS`] on the create operations' responses, each link named after the operation
/// it leads to. Applied by [`super::api`] with [`CommonErrors`]; a link to an operation or
/// status that is not in the document is skipped here and caught by the API tests, which
/// walk the served document.
pub struct Links;

impl Modify for Links {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::link::LinkBuilder;
        use utoipa::openapi::RefOr;
        const NEW_ID: &str = "$response.body#/id";
        for op in operations_mut(openapi) {
            let Some(id) = op.operation_id.as_deref() else {
                continue;
            };
            for (_, status, groups) in LINKS.iter().filter(|(source, ..)| *source == id) {
                let Some(RefOr::T(response)) = op.responses.responses.get_mut(*status) else {
                    continue;
                };
                for (target, into) in groups.iter().copied().flatten() {
                    let link = LinkBuilder::new().operation_id(*target);
                    let link = match into {
                        LinkTo::Path(name) => link.parameter(*name, NEW_ID),
                        LinkTo::Body(field) => {
                            link.request_body(Some(serde_json::json!({ *field: NEW_ID })))
                        }
                    };
                    response
                        .links
                        .insert((*target).to_string(), RefOr::T(link.build()));
                }
            }
        }
    }
}

/// Every operation of the document.
fn operations_mut(
    openapi: &mut utoipa::openapi::OpenApi,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    openapi.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
    })
}

/// Lists `values` as the enum of the operation's parameter `name`, if it has one.
fn set_parameter_enum(op: &mut utoipa::openapi::path::Operation, name: &str, values: &[&str]) {
    for p in op.parameters.iter_mut().flatten() {
        if let utoipa::openapi::RefOr::T(p) = p {
            if p.name == name {
                if let Some(utoipa::openapi::RefOr::T(schema)) = p.schema.as_mut() {
                    set_enum(schema, values);
                }
            }
        }
    }
}

fn set_enum(schema: &mut utoipa::openapi::Schema, values: &[&str]) {
    use utoipa::openapi::{RefOr, Schema};
    let list = || Some(values.iter().map(|v| serde_json::Value::from(*v)).collect());
    match schema {
        Schema::Object(object) => object.enum_values = list(),
        Schema::OneOf(one_of) => {
            for item in &mut one_of.items {
                if let RefOr::T(Schema::Object(object)) = item {
                    if object.schema_type
                        != utoipa::openapi::schema::SchemaType::Type(utoipa::openapi::Type::Null)
                    {
                        object.enum_values = list();
                    }
                }
            }
        }
        _ => {}
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

/// A multipart upload: the file in field `file` (or `image`). Other fields are refused
/// (`additionalProperties: false`, from `deny_unknown_fields`).
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only: the handlers read the multipart stream
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
