//! Image providers behind one trait: the embedded `sandbox` renderer and the real Black Forest
//! Labs API (`bfl`).
