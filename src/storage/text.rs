//! Text drawn on images the server composes (sandbox renderings, social cards): the one bundled
//! font (DejaVu Sans Bold, so nothing is read from the system) and anti-aliased drawing with it.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use image::RgbImage;

/// DejaVu Sans Bold (its licence permits bundling).
pub static FONT: &[u8] = include_bytes!("DejaVuSans-Bold.ttf");

/// The bundled font, parsed (cheap: it borrows [`FONT`]).
pub fn font() -> Result<FontRef<'static>, ab_glyph::InvalidFont> {
    FontRef::try_from_slice(FONT)
}

/// Draws `text` from `x` on `baseline` in `color`, blended by each pixel's coverage. Glyphs whose
/// advance would pass `max_x` are left out (and what follows them); pixels outside the image are
/// skipped.
#[allow(clippy::too_many_arguments)]
pub fn draw(
    img: &mut RgbImage,
    font: &FontRef<'_>,
    size: f32,
    x: f32,
    baseline: f32,
    max_x: f32,
    text: &str,
    color: [u8; 3],
) {
    let scale = PxScale::from(size);
    let scaled = font.as_scaled(scale);
    let mut caret = x;
    let mut previous = None;
    for ch in text.chars() {
        let id = font.glyph_id(ch);
        if let Some(prev) = previous {
            caret += scaled.kern(prev, id);
        }
        let advance = scaled.h_advance(id);
        if caret + advance > max_x {
            break;
        }
        let glyph = id.with_scale_and_position(scale, point(caret, baseline));
        if let Some(outlined) = font.outline_glyph(glyph) {
            let bounds = outlined.px_bounds();
            outlined.draw(|gx, gy, coverage| {
                let (px, py) = (bounds.min.x as i64 + i64::from(gx), bounds.min.y as i64 + i64::from(gy));
                if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                    let p = img.get_pixel_mut(px as u32, py as u32);
                    for c in 0..3 {
                        p[c] = (f32::from(p[c]) * (1.0 - coverage) + f32::from(color[c]) * coverage) as u8;
                    }
                }
            });
        }
        caret += advance;
        previous = Some(id);
    }
}
