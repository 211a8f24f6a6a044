//! The arena: blind votes on users' own runs ([`votes`]), the boards recomputed from them in
//! the background into snapshot rows ([`board`]), and the rating maths, pure ([`rating`]).
//! Pages: `pages.rs` (`/leaderboard…`, `/account/arena`, voting on a run); JSON: `api.rs`.

pub mod api;
pub mod board;
pub mod pages;
pub mod rating;
pub mod votes;
