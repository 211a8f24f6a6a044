//! Showcase images of the comparison pages.
