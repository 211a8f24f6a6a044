//! The arena: blind votes on users' own runs, boards per use case, and their ratings. The
//! rating maths is pure ([`rating`]).

pub mod rating;
