//! [`Routes`]: an axum `Router` that remembers the paths it was given, so the application's
//! route table can be listed (the edge tests walk every route and check that each one refuses a
//! forged form or a missing sign-in; a route added later cannot be forgotten by that test).

use axum::{Router, routing::MethodRouter};

/// A router under construction, plus the list of its paths.
pub struct Routes<S> {
    router: Router<S>,
    paths: Vec<&'static str>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Self {
        Routes { router: Router::new(), paths: Vec::new() }
    }

    /// Adds `path` with its method router (the same as [`Router::route`]).
    pub fn route(mut self, path: &'static str, method_router: MethodRouter<S>) -> Self {
        if !self.paths.contains(&path) {
            self.paths.push(path);
        }
        self.router = self.router.route(path, method_router);
        self
    }

    /// Adds every route of `other`.
    pub fn merge(mut self, other: Routes<S>) -> Self {
        for path in other.paths {
            if !self.paths.contains(&path) {
                self.paths.push(path);
            }
        }
        self.router = self.router.merge(other.router);
        self
    }

    /// Every path, in the order they were added (with axum's `{param}` placeholders).
    pub fn paths(&self) -> &[&'static str] {
        &self.paths
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
}
