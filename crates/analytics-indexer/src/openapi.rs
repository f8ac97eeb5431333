//! The analytics API's OpenAPI 3.1 document, generated with utoipa from the
//! handlers' annotations and served at `GET /api/analytics/openapi.json`
//! (beside the routes it describes, so a proxy that sends `/api/analytics`
//! to the indexer serves it too). Every analytics route needs the bearer token
//! (`[analytics] token`); the document itself is open.
//!
//! [`routes`] registers the `/api` routes for the app and for the document
//! alike, so the two cannot drift apart.

use std::sync::OnceLock;

use actix_web::{HttpResponse, get};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::AppExt as _;
use utoipa_actix_web::service_config::ServiceConfig;

/// The `bearer` security scheme: `Authorization: Bearer <[analytics] token>`.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The indexer's access token ([analytics] token)."))
                    .build(),
            ),
        );
    }
}

/// The document's parts that are not routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Signup analytics",
        description = "Counts and search over the prospects, built from the events alone. Every route but this \
                       document needs the bearer token; every error is an RFC 9457 problem.",
        license(name = "MIT OR Apache-2.0")
    ),
    modifiers(&BearerToken),
    components(schemas(crate::schema::Reference, runtime::ops::Problem))
)]
pub struct ApiDoc;

/// Registers every `/api` route (for the app and for the document).
pub fn routes(config: &mut ServiceConfig) {
    config
        .service(crate::http::api_summary)
        .service(crate::http::api_search)
        .service(crate::http::api_delivery)
        .service(openapi_json);
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

/// `GET /api/analytics/openapi.json`: this API's OpenAPI 3.1 document.
#[utoipa::path(
    responses((status = 200, description = "The OpenAPI 3.1 document of the analytics API",
        content_type = "application/json", body = Object))
)]
#[get("/api/analytics/openapi.json")]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_analytics_route_is_documented_behind_the_bearer_token() {
        let doc = super::document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        let mut paths: Vec<&str> = doc["paths"].as_object().expect("paths").keys().map(String::as_str).collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            [
                "/api/analytics/delivery/{prospect_id}",
                "/api/analytics/openapi.json",
                "/api/analytics/search",
                "/api/analytics/summary"
            ]
        );
        for path in paths.iter().filter(|p| !p.ends_with("openapi.json")) {
            let get = &doc["paths"][path]["get"];
            assert_eq!(get["security"][0]["bearer"], serde_json::json!([]), "{path} needs the token");
            assert!(get["responses"]["401"]["headers"]["WWW-Authenticate"].is_object(), "{path} says how to log in");
        }
        assert!(doc["paths"]["/api/analytics/openapi.json"]["get"]["security"].is_null(), "the document is open");
    }
}
