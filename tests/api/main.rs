//! Integration tests: the real app over HTTP against a fresh PostgreSQL database per test.

mod accounts;
mod architecture;
mod arena;
mod bad_input;
mod catalog;
mod deploy;
mod edge;
mod foundation;
mod hardening;
mod helpers;
mod landing;
mod ledger;
mod lifecycle;
mod live;
mod media;
mod openapi;
mod pages;
mod payments;
mod perf;
mod queue;
mod routes;
mod rows;
mod runs;
mod viewer;
mod webhooks;
