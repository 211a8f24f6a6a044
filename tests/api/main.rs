//! Integration tests: the real app over HTTP against a fresh PostgreSQL database per test.

mod catalog;
mod foundation;
mod helpers;
mod media;
