//! The comparison viewer's images (`templates/viewer.html`, `assets/viewer.js`): what a page
//! hands the viewer for each image: its label, the web rendition shown first, the original
//! loaded on demand, and the sizes that may be shown.

/// One image of the comparison viewer: the web rendition first, the original on demand.
pub struct ViewerImage {
    /// "Model A" in an unrevealed blind run, else the model's name.
    pub label: String,
    pub rendition: String,
    /// The rendition's pixel size, when known: the viewer loads the original only once the
    /// zoom shows more pixels than this.
    pub rendition_width: Option<i32>,
    pub rendition_height: Option<i32>,
    pub original: String,
    /// The original's size (none in an unrevealed blind run: no per-model sizes).
    pub width: Option<i32>,
    pub height: Option<i32>,
}

impl ViewerImage {
    /// "2048 × 2048 px", when the size may be shown.
    pub fn dimensions(&self) -> Option<String> {
        Some(format!("{} × {} px", self.width?, self.height?))
    }
}
