//! The OpenAPI 3.1 document of the JSON API, generated with utoipa from the
//! handlers' annotations and the types below, served at
//! `GET /api/openapi.json`; the routes that serve the contract documents
//! (this one, the events' AsyncAPI document, the events' JSON Schemas).
//!
//! [`routes`] registers every `/api` route, for the app and for the document
//! alike (utoipa-actix-web collects each handler's path as it registers it),
//! so the document cannot name a route that is not served nor miss one.
//!
//! The request body of `POST /api/prospects` is read field by field (a field
//! of the wrong type is reported against that field), so its schema is the
//! `crate::schema::SignUp` type rather than a type the handler deserialises;
//! the limits in it are the domain's (`crate::domain`). The answers' schemas
//! are the handlers' own body types (`crate::api`); the problem body is
//! `runtime::ops::Problem` (every service's), and the other shapes only the
//! document needs are in `crate::schema`.

use std::sync::OnceLock;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, web};
use utoipa::OpenApi;
use utoipa_actix_web::AppExt as _;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::catalog::Catalog;
use crate::state::AppState;

/// The document with the codes the reference lists hold now, as the
/// fields' `enum` (the service's tables, which can differ from the built-in
/// lists): exactly what the API accepts.
fn with_current_codes(catalog: &Catalog) -> serde_json::Value {
    let mut doc = document().clone();
    let fields = &mut doc["components"]["schemas"]["SignUp"]["properties"];
    fields["country"]["enum"] = catalog.countries().iter().map(|c| c.code.as_str()).collect();
    fields["role"]["enum"] = catalog.roles().iter().map(|r| r.code.as_str()).collect();
    doc
}

/// The document's parts that are not routes: its title and the shared
/// schemas. The paths come from the routes themselves ([`routes`]).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Signup",
        description = "Sign up, and follow where a sign-up is. Every error is an RFC 9457 problem. \
                       The events a sign-up becomes are described by the AsyncAPI document at /api/asyncapi.json.",
        license(name = "MIT OR Apache-2.0")
    ),
    components(schemas(
        crate::schema::SignUp,
        crate::schema::Reference,
        runtime::ops::Problem,
        crate::schema::Challenge,
        crate::schema::ChallengeParameters
    ))
)]
pub struct ApiDoc;

/// Registers every `/api` route. The served app and the document are both
/// built from this one list, so a route is documented exactly when it is
/// served.
pub fn routes(config: &mut ServiceConfig) {
    config
        .service(crate::api::create_prospect)
        .service(crate::api::prospect_status)
        .service(crate::api::countries)
        .service(crate::api::roles)
        .service(crate::api::challenge)
        .service(openapi_json)
        .service(asyncapi_json)
        .service(event_schema);
}

/// The document as JSON, built once from [`routes`].
pub fn document() -> &'static serde_json::Value {
    static DOCUMENT: OnceLock<serde_json::Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let (_, api) =
            actix_web::App::new().into_utoipa_app().openapi(ApiDoc::openapi()).configure(routes).split_for_parts();
        serde_json::to_value(api).unwrap_or_else(|_| unreachable!("the document is plain JSON"))
    })
}

/// `GET /api/openapi.json`: this API's OpenAPI 3.1 document.
#[utoipa::path(
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json",
        body = Object))
)]
#[get("/api/openapi.json")]
pub async fn openapi_json(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(with_bot_check(with_current_codes(&state.catalog()), state.bot_check.enabled()))
}

/// The document as this server checks sign-ups: while the bot check is on,
/// `altcha` is required; while it is off, it is no field of the API.
fn with_bot_check(mut doc: serde_json::Value, enabled: bool) -> serde_json::Value {
    let sign_up = &mut doc["components"]["schemas"]["SignUp"];
    if enabled {
        if let Some(required) = sign_up["required"].as_array_mut() {
            required.push("altcha".into());
        }
    } else if let Some(fields) = sign_up["properties"].as_object_mut() {
        fields.remove("altcha");
    }
    doc
}

/// `GET /api/asyncapi.json`: the AsyncAPI 3.0 document of the events,
/// generated from the `messages` crate.
#[utoipa::path(
    responses((status = 200, description = "The AsyncAPI 3.0 document of the events, their dead letters and the \
        prospects request-reply service", content_type = "application/json", body = Object))
)]
#[get("/api/asyncapi.json")]
pub async fn asyncapi_json() -> HttpResponse {
    static DOCUMENT: OnceLock<serde_json::Value> = OnceLock::new();
    HttpResponse::Ok().json(DOCUMENT.get_or_init(messages::asyncapi::document))
}

/// `GET /api/schemas/{ce_type}.json`: the JSON Schema of an event type's
/// payload: where the events' `ce-dataschema` points.
#[utoipa::path(
    params(("ce_type" = String, Path, description = "An event type (its ce-type)",
        example = "io.signup.prospect.signedup.v2")),
    responses(
        (status = 200, description = "The payload's JSON Schema (draft 2020-12)", content_type = "application/schema+json",
            body = Object),
        (status = 404, description = "No event has this type", body = runtime::ops::Problem, content_type = "application/problem+json"),
    )
)]
#[get("/api/schemas/{ce_type}.json")]
pub async fn event_schema(ce_type: web::Path<String>) -> HttpResponse {
    match messages::schemas::of(&ce_type) {
        Some(schema) => HttpResponse::Ok().content_type("application/schema+json").body(schema),
        None => runtime::ops::Problem::new(StatusCode::NOT_FOUND, "no event has this type").response(&[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_every_api_route() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut paths: Vec<&str> = doc["paths"].as_object().expect("paths").keys().map(String::as_str).collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            vec![
                "/api/asyncapi.json",
                "/api/challenge",
                "/api/countries",
                "/api/openapi.json",
                "/api/prospects",
                "/api/prospects/{id}",
                "/api/roles",
                "/api/schemas/{ce_type}.json"
            ]
        );
        assert!(doc["paths"]["/api/prospects"]["post"].is_object(), "the method comes from the route");
        let post = &doc["paths"]["/api/prospects"]["post"];
        for status in ["202", "400", "413", "415", "422", "429", "503"] {
            assert!(post["responses"][status].is_object(), "POST /api/prospects documents {status}");
        }
        assert!(post["responses"]["422"]["content"]["application/problem+json"].is_object());
        assert!(post["responses"]["503"]["headers"]["Retry-After"].is_object());
    }

    #[test]
    fn the_served_document_lists_the_codes_the_lists_hold_now() {
        let served = with_current_codes(&Catalog::builtin());
        let fields = &served["components"]["schemas"]["SignUp"]["properties"];
        assert!(fields["country"]["enum"].as_array().is_some_and(|codes| codes.contains(&"GB".into())));
        let catalog = Catalog::new(
            vec![messages::Country { code: "XK".into(), name: "Kosovo".into() }],
            vec![messages::Role { code: "-".into(), name: "Not telling".into() }],
        );
        let served = with_current_codes(&catalog);
        let fields = &served["components"]["schemas"]["SignUp"]["properties"];
        assert_eq!(fields["country"]["enum"], serde_json::json!(["XK"]));
        assert_eq!(fields["role"]["enum"], serde_json::json!(["-"]));
    }

    #[test]
    fn the_served_document_requires_altcha_exactly_while_the_bot_check_is_on() {
        let on = with_bot_check(document().clone(), true);
        let sign_up = &on["components"]["schemas"]["SignUp"];
        assert!(sign_up["required"].as_array().is_some_and(|r| r.contains(&"altcha".into())), "{sign_up}");
        assert!(sign_up["properties"]["altcha"].is_object());
        let off = with_bot_check(document().clone(), false);
        let sign_up = &off["components"]["schemas"]["SignUp"];
        assert!(sign_up["properties"].get("altcha").is_none(), "{sign_up}");
        assert!(!sign_up["required"].as_array().is_some_and(|r| r.contains(&"altcha".into())));
        assert!(on["paths"]["/api/challenge"]["get"]["responses"]["200"].is_object());
    }
}
