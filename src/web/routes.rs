//! [`Routes`]: an axum `Router` that remembers the paths it was given, so the application's
//! route table can be listed (the edge tests walk every route and check that each one refuses a
//! forged form or a missing sign-in; a route added later cannot be forgotten by that test), and
//! the OpenAPI description of the routes added with [`Routes::api`].
//!
//! A JSON API endpoint is one attribute and one line: `#[utoipa::path(get, path = "/api/v1/…",
//! responses(…))]` on the handler, and `.api(routes!(handler))` in the domain's `routes()`. The
//! path, the method and the description come from the attribute, so the router and the
//! document (`GET /api/v1/openapi.json`, `GET /docs/api`) cannot drift apart.

use std::{
    collections::HashSet,
    sync::{Mutex, OnceLock},
};

use axum::{Router, routing::MethodRouter};
use utoipa::openapi::OpenApi;
use utoipa_axum::router::UtoipaMethodRouter;

/// A router under construction, plus the list of its paths and the description of its API.
pub struct Routes<S> {
    router: Router<S>,
    paths: Vec<&'static str>,
    openapi: OpenApi,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self::new()
    }
}

/// The one `&'static str` of each distinct path (documented paths arrive as `String`s; each is
/// kept once per process, however often the route table is built).
fn intern(path: &str) -> &'static str {
    static PATHS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut paths = PATHS.get_or_init(Mutex::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match paths.get(path) {
        Some(interned) => interned,
        None => {
            let interned: &'static str = Box::leak(path.to_string().into_boxed_str());
            paths.insert(interned);
            interned
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Self {
        Routes { router: Router::new(), paths: Vec::new(), openapi: OpenApi::default() }
    }

    fn record(&mut self, path: &'static str) {
        if !self.paths.contains(&path) {
            self.paths.push(path);
        }
    }

    /// Adds `path` with its method router (the same as [`Router::route`]). Not for the JSON API:
    /// its endpoints are added with [`Routes::api`] so that they are described.
    pub fn route(mut self, path: &'static str, method_router: MethodRouter<S>) -> Self {
        self.record(path);
        self.router = self.router.route(path, method_router);
        self
    }

    /// Adds documented handlers: `utoipa_axum::routes!(handler, …)` of handlers with a
    /// `#[utoipa::path]` attribute (their paths, methods, and the operations and schemas of the
    /// OpenAPI document). Layers for the handlers go on the method router first, e.g.
    /// `routes!(create).map(|m| m.layer(…))` (`utoipa_axum::router::UtoipaMethodRouterExt`).
    pub fn api(mut self, (schemas, paths, method_router): UtoipaMethodRouter<S>) -> Self {
        for (path, item) in paths.paths {
            let path = intern(&path);
            self.record(path);
            self.router = self.router.route(path, method_router.clone());
            match self.openapi.paths.paths.get_mut(path) {
                Some(existing) => existing.merge_operations(item),
                None => {
                    self.openapi.paths.paths.insert(path.to_string(), item);
                }
            }
        }
        let components = self.openapi.components.get_or_insert_with(utoipa::openapi::Components::new);
        components.schemas.extend(schemas);
        self
    }

    /// Adds every route of `other`.
    pub fn merge(mut self, other: Routes<S>) -> Self {
        for path in other.paths {
            self.record(path);
        }
        self.router = self.router.merge(other.router);
        self.openapi.merge(other.openapi);
        self
    }

    /// Every path, in the order they were added (with axum's `{param}` placeholders).
    pub fn paths(&self) -> &[&'static str] {
        &self.paths
    }

    /// The OpenAPI description of the routes added with [`Routes::api`] (paths, operations and
    /// the schemas they use; `app::docs` adds the rest of the document).
    pub fn openapi(&self) -> &OpenApi {
        &self.openapi
    }

    pub fn into_router(self) -> Router<S> {
        self.router
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::{get, post};

    use super::*;

    #[test]
    fn paths_are_recorded_once_in_order() {
        let a: Routes<()> = Routes::new().route("/a", get(|| async {})).route("/a", post(|| async {}));
        let b = Routes::new().route("/b/{id}", get(|| async {}));
        let all = a.merge(b);
        assert_eq!(all.paths(), &["/a", "/b/{id}"]);
    }

    #[utoipa::path(get, path = "/api/test/{id}", params(("id" = String, Path)), responses((status = 200)))]
    async fn documented() {}

    #[utoipa::path(post, path = "/api/test/{id}", responses((status = 201)))]
    async fn documented_post() {}

    #[test]
    fn documented_routes_are_routed_and_described() {
        let routes: Routes<()> = Routes::new()
            .api(utoipa_axum::routes!(documented))
            .merge(Routes::new().api(utoipa_axum::routes!(documented_post)));
        assert_eq!(routes.paths(), &["/api/test/{id}"]);
        let item = routes.openapi().paths.paths.get("/api/test/{id}").expect("described");
        assert!(item.get.is_some() && item.post.is_some());
        assert!(std::ptr::eq(intern("/api/test/{id}"), routes.paths()[0]), "interned once");
    }
}
