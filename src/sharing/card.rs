//! The social card (Open Graph / Twitter `summary_large_image`): a 1200×630 PNG made of the
//! images themselves (2 to 4 tiles, each cropped to fill its tile), each model's name on a dark
//! pill in its tile's top-left corner, the site's name in the bottom-right corner and a
//! "SANDBOX" badge (top right) when a tile is a sandbox rendering. CPU-bound: [`render`] runs in `storage::images::run` (the
//! blocking threads, at most `images::CONCURRENT` at a time), and a run's card is rendered once
//! and stored.

use std::io::Cursor;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use bytes::Bytes;
use image::{DynamicImage, Rgb, RgbImage, imageops::FilterType};

use crate::storage::{images, text};

pub const WIDTH: u32 = 1200;
pub const HEIGHT: u32 = 630;
const GAP: u32 = 6;
const BACKGROUND: [u8; 3] = [15, 17, 21];

/// One tile: an image (encoded, as stored) and the name to draw on it.
pub struct Tile {
    pub bytes: Bytes,
    pub label: String,
}

/// Decodes the tiles' images (under the limits of generated images), composes the card and
/// encodes it as PNG.
pub fn render(tiles: Vec<Tile>, sandbox: bool) -> anyhow::Result<Bytes> {
    anyhow::ensure!(!tiles.is_empty(), "a card needs at least one image");
    let tiles = &tiles[..tiles.len().min(4)];
    let rects = layout(tiles.len());
    let mut card = RgbImage::from_pixel(WIDTH, HEIGHT, Rgb(BACKGROUND));
    let font = text::font()?;
    let label_size = if tiles.len() >= 3 { 28.0 } else { 32.0 };
    for (tile, &(x, y, w, h)) in tiles.iter().zip(&rects) {
        // One decoded original at a time: decoded, cut to its tile, dropped.
        let img = images::decode(&tile.bytes, &images::GENERATED)?;
        let filled = img.resize_to_fill(w, h, FilterType::Triangle).to_rgb8();
        drop(img);
        image::imageops::replace(&mut card, &filled, i64::from(x), i64::from(y));
        // The name on a dark pill in the tile's top-left corner: readable on any image, and
        // clear of whatever the image has at its bottom (a sandbox rendering's own caption).
        let label = fit(&font, label_size, &tile.label, w as f32 - 48.0);
        pill(
            &mut card,
            &font,
            label_size,
            x as f32 + 16.0,
            y as f32 + 16.0,
            &label,
            [255, 255, 255],
            BACKGROUND,
            false,
        );
    }
    if tiles.len() == 2 {
        versus(&mut card, &font);
    }
    let brand_y = HEIGHT as f32 - 16.0 - 22.0 * 1.8;
    pill(&mut card, &font, 22.0, WIDTH as f32 - 16.0, brand_y, "Faceoff", [255, 255, 255], [0x5b, 0x3d, 0xf5], true);
    if sandbox {
        pill(&mut card, &font, 22.0, WIDTH as f32 - 16.0, 16.0, "SANDBOX", [20, 20, 20], [255, 196, 0], true);
    }
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(card).write_to(&mut out, image::ImageFormat::Png)?;
    Ok(Bytes::from(out.into_inner()))
}

/// The tiles' rectangles (x, y, width, height): 1–3 side by side, 4 in a 2×2 grid.
fn layout(n: usize) -> Vec<(u32, u32, u32, u32)> {
    match n {
        4 => {
            let (w, h) = ((WIDTH - GAP) / 2, (HEIGHT - GAP) / 2);
            vec![
                (0, 0, w, h),
                (w + GAP, 0, WIDTH - w - GAP, h),
                (0, h + GAP, w, HEIGHT - h - GAP),
                (w + GAP, h + GAP, WIDTH - w - GAP, HEIGHT - h - GAP),
            ]
        }
        n => {
            let n = n.clamp(1, 3) as u32;
            let w = (WIDTH - GAP * (n - 1)) / n;
            (0..n)
                .map(|i| {
                    let x = i * (w + GAP);
                    let width = if i == n - 1 { WIDTH - x } else { w };
                    (x, 0, width, HEIGHT)
                })
                .collect()
        }
    }
}

fn text_width(font: &FontRef<'_>, size: f32, text: &str) -> f32 {
    let scaled = font.as_scaled(PxScale::from(size));
    let mut width = 0.0;
    let mut previous = None;
    for ch in text.chars() {
        let id = font.glyph_id(ch);
        if let Some(prev) = previous {
            width += scaled.kern(prev, id);
        }
        width += scaled.h_advance(id);
        previous = Some(id);
    }
    width
}

/// `text`, shortened with an ellipsis to fit `max` pixels.
fn fit(font: &FontRef<'_>, size: f32, text: &str, max: f32) -> String {
    if text_width(font, size, text) <= max {
        return text.to_string();
    }
    let mut chars: Vec<char> = text.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let candidate = format!("{}…", chars.iter().collect::<String>().trim_end());
        if text_width(font, size, &candidate) <= max {
            return candidate;
        }
    }
    String::new()
}

fn blend(p: &mut Rgb<u8>, color: [u8; 3], alpha: f32) {
    for c in 0..3 {
        p[c] = (f32::from(p[c]) * (1.0 - alpha) + f32::from(color[c]) * alpha) as u8;
    }
}

/// A rounded label at (`x`, `y`) (its right edge at `x` when `from_right`).
#[allow(clippy::too_many_arguments)]
fn pill(
    img: &mut RgbImage,
    font: &FontRef<'_>,
    size: f32,
    x: f32,
    y: f32,
    text: &str,
    color: [u8; 3],
    background: [u8; 3],
    from_right: bool,
) {
    let (pad_x, height) = (size * 0.7, size * 1.8);
    let width = text_width(font, size, text) + 2.0 * pad_x;
    let left = if from_right { x - width } else { x };
    let radius = height / 2.0;
    let (x0, y0) = (left.max(0.0) as u32, y.max(0.0) as u32);
    let (x1, y1) = (((left + width) as u32).min(img.width()), ((y + height) as u32).min(img.height()));
    for py in y0..y1 {
        for px in x0..x1 {
            // Distance outside the rounded rectangle's core, for soft round ends.
            let cx = (px as f32 + 0.5).clamp(left + radius, left + width - radius);
            let cy = y + radius;
            let d = ((px as f32 + 0.5 - cx).powi(2) + (py as f32 + 0.5 - cy).powi(2)).sqrt();
            let alpha = (radius - d + 0.5).clamp(0.0, 1.0) * 0.88;
            if alpha > 0.0 {
                blend(img.get_pixel_mut(px, py), background, alpha);
            }
        }
    }
    let baseline = y + height / 2.0 + size * 0.36;
    text::draw(img, font, size, left + pad_x, baseline, f32::INFINITY, text, color);
}

/// The "VS" disc between two tiles.
fn versus(img: &mut RgbImage, font: &FontRef<'_>) {
    let (cx, cy, r) = (WIDTH as f32 / 2.0, HEIGHT as f32 / 2.0, 38.0f32);
    for py in (cy - r - 2.0) as u32..(cy + r + 2.0) as u32 {
        for px in (cx - r - 2.0) as u32..(cx + r + 2.0) as u32 {
            let d = ((px as f32 + 0.5 - cx).powi(2) + (py as f32 + 0.5 - cy).powi(2)).sqrt();
            let ring = (r - d + 0.5).clamp(0.0, 1.0);
            if ring > 0.0 {
                let inner = (r - 4.0 - d + 0.5).clamp(0.0, 1.0);
                blend(img.get_pixel_mut(px, py), [255, 255, 255], ring);
                blend(img.get_pixel_mut(px, py), BACKGROUND, inner);
            }
        }
    }
    let size = 30.0;
    let w = text_width(font, size, "VS");
    text::draw(img, font, size, cx - w / 2.0, cy + size * 0.36, f32::INFINITY, "VS", [255, 255, 255]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32, color: [u8; 3]) -> Bytes {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(w, h, Rgb(color)));
        images::encode_jpeg(&img, 80).expect("jpeg")
    }

    #[test]
    fn cards_are_1200_by_630_for_every_tile_count() {
        for n in 1..=4 {
            let tiles = (0..n)
                .map(|i| Tile { bytes: jpeg(300 + 100 * i, 400, [40 * i as u8, 90, 200]), label: format!("Model {i}") })
                .collect();
            let png = render(tiles, n % 2 == 0).expect("card");
            let card = image::load_from_memory(&png).expect("png");
            assert_eq!((card.width(), card.height()), (WIDTH, HEIGHT));
        }
        for n in 1..=4 {
            let rects = layout(n);
            assert_eq!(rects.len(), n);
            assert!(rects.iter().all(|&(x, y, w, h)| x + w <= WIDTH && y + h <= HEIGHT && w > 200 && h > 300));
        }
    }
}
