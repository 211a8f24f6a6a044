//! Decoding images without trusting them: every image the server decodes (uploaded references,
//! provider results, showcase renditions) goes through here.
//!
//! - [`probe`] reads only the header (format and dimensions): it costs microseconds whatever the
//!   file declares, so callers refuse what is too large before any expensive work.
//! - [`decode`] decodes under [`ImageLimits`]: the header check again, then the `image` crate's
//!   own limits (sides and bytes allocated), so a file that lies in its header cannot allocate
//!   more either.
//! - [`run`] runs such CPU-bound work off the async threads on [`CONCURRENT`] dedicated threads
//!   per process: decoding is bounded in memory (the limits times this) and cannot take every
//!   core from the requests. (Freed image buffers go back to the system: the binary uses
//!   mimalloc, see `main.rs`; with glibc's per-thread arenas the server peaked over 450 MiB.)

use std::io::Cursor;

use bytes::Bytes;
use image::{DynamicImage, ImageFormat, ImageReader};
use std::sync::{Mutex, OnceLock, mpsc};

/// Images decoded at once by this process (its image threads).
pub const CONCURRENT: usize = 2;

type Job = Box<dyn FnOnce() + Send>;

/// The image threads, started on first use; they take jobs in order.
fn pool() -> &'static Mutex<mpsc::Sender<Job>> {
    static POOL: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for i in 0..CONCURRENT {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("image-{i}")).spawn(move || {
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        // A panicking job drops its answer channel (the caller gets an error);
                        // the thread lives on.
                        Ok(job) => {
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        }
                        Err(_) => return,
                    }
                }
            });
            if let Err(err) = spawned {
                tracing::error!("could not start an image thread: {err}");
            }
        }
        Mutex::new(tx)
    })
}

/// What an image may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    pub max_side: u32,
    pub max_pixels: u64,
    /// Bytes the decoder may allocate (the decoded image included).
    pub max_alloc: u64,
}

/// Reference images users upload: up to 25 megapixels (a 24 MP camera's photo), 8192 px a side.
pub const REFERENCE: ImageLimits = ImageLimits { max_side: 8192, max_pixels: 25_000_000, max_alloc: 128 << 20 };
/// Images providers deliver: up to 4 MP in our modes; generous for providers that round up.
pub const GENERATED: ImageLimits = ImageLimits { max_side: 8192, max_pixels: 16_777_216, max_alloc: 128 << 20 };

/// Why an image was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageProblem {
    #[error("the file is not an image we can read")]
    Unreadable,
    #[error("the image must be a PNG, JPEG or WebP file")]
    UnsupportedFormat,
    #[error("the image is {width}×{height} pixels; the limit is {max_pixels} pixels and {max_side} pixels a side")]
    TooLarge { width: u32, height: u32, max_side: u32, max_pixels: u64 },
    #[error("the image is damaged or not a real image")]
    Damaged,
}

/// An image's format and size, read from its header only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
}

fn reader(bytes: &[u8]) -> Result<ImageReader<Cursor<&[u8]>>, ImageProblem> {
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|_| ImageProblem::Unreadable)?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP) => Ok(reader),
        Some(_) => Err(ImageProblem::UnsupportedFormat),
        None => Err(ImageProblem::Unreadable),
    }
}

/// Reads the format and dimensions from the header and checks them against `limits`.
pub fn probe(bytes: &[u8], limits: &ImageLimits) -> Result<Probe, ImageProblem> {
    let reader = reader(bytes)?;
    let format = reader.format().ok_or(ImageProblem::Unreadable)?;
    let (width, height) = reader.into_dimensions().map_err(|_| ImageProblem::Damaged)?;
    let too_large = width == 0
        || height == 0
        || width > limits.max_side
        || height > limits.max_side
        || u64::from(width) * u64::from(height) > limits.max_pixels;
    if too_large {
        return Err(ImageProblem::TooLarge { width, height, max_side: limits.max_side, max_pixels: limits.max_pixels });
    }
    Ok(Probe { format, width, height })
}

/// Decodes an image within `limits` (CPU-bound: call it inside [`run`]).
pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<DynamicImage, ImageProblem> {
    let probed = probe(bytes, limits)?;
    let mut reader = reader(bytes)?;
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    decoder_limits.max_alloc = Some(limits.max_alloc);
    reader.limits(decoder_limits);
    reader.decode().map_err(|err| match err {
        image::ImageError::Limits(_) => ImageProblem::TooLarge {
            width: probed.width,
            height: probed.height,
            max_side: limits.max_side,
            max_pixels: limits.max_pixels,
        },
        _ => ImageProblem::Damaged,
    })
}

/// Runs `work` (decoding, resizing, encoding) on one of the [`CONCURRENT`] image threads once
/// it is free.
pub async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(work());
    });
    pool()
        .lock()
        .map_err(|_| anyhow::anyhow!("image threads poisoned"))?
        .send(job)
        .map_err(|_| anyhow::anyhow!("image threads stopped"))?;
    rx.await.map_err(|_| anyhow::anyhow!("the image work failed (panicked)"))
}

/// A JPEG (quality `quality`) of `img`, for storage and the web.
pub fn encode_jpeg(img: &DynamicImage, quality: u8) -> anyhow::Result<Bytes> {
    let mut out = Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality).encode_image(&img.to_rgb8())?;
    Ok(Bytes::from(out.into_inner()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The header of a PNG declaring `side`×`side` RGBA pixels (with a truncated image stream):
    /// all that [`probe`] reads, and what a decompression bomb shows before it is decoded.
    pub fn png_bomb(side: u32) -> Vec<u8> {
        fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut crc = 0xFFFF_FFFFu32;
            for &b in kind.iter().chain(data) {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
                }
            }
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            out.extend_from_slice(&(!crc).to_be_bytes());
        }
        let mut ihdr = side.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&side.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(&mut out, b"IDAT", &[0x78, 0x9c]);
        chunk(&mut out, b"IEND", &[]);
        out
    }

    fn jpeg(width: u32, height: u32) -> Vec<u8> {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(width, height, image::Rgb([40, 90, 200])));
        encode_jpeg(&img, 80).expect("jpeg").to_vec()
    }

    #[test]
    fn the_header_is_enough_to_refuse_a_bomb() {
        let bomb = png_bomb(8192);
        assert!(bomb.len() < 1024);
        match probe(&bomb, &REFERENCE) {
            Err(ImageProblem::TooLarge { width: 8192, height: 8192, .. }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(matches!(decode(&bomb, &REFERENCE), Err(ImageProblem::TooLarge { .. })));
    }

    #[test]
    fn real_images_pass_and_others_are_named() {
        let ok = jpeg(64, 48);
        assert_eq!(probe(&ok, &REFERENCE).map(|p| (p.width, p.height)), Ok((64, 48)));
        assert_eq!(decode(&ok, &REFERENCE).map(|i| (i.width(), i.height())), Ok((64, 48)));
        assert_eq!(probe(b"not an image", &REFERENCE), Err(ImageProblem::Unreadable));
        assert_eq!(probe(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", &REFERENCE), Err(ImageProblem::UnsupportedFormat));
        assert_eq!(decode(&ok[..ok.len() / 3], &REFERENCE).err(), Some(ImageProblem::Damaged));
        let wide = ImageLimits { max_side: 8192, max_pixels: 1000, max_alloc: 1 << 20 };
        assert!(matches!(probe(&ok, &wide), Err(ImageProblem::TooLarge { .. })));
    }
}
