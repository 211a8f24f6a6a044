//! Stored images: access control and cache headers on `/media/{key}`, and thumbnails.

use bytes::Bytes;
use reqwest::StatusCode;

use crate::helpers::TestApp;

fn jpeg() -> Bytes {
    let img = image::RgbImage::from_pixel(64, 48, image::Rgb([200, 40, 90]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).expect("encode");
    Bytes::from(out.into_inner())
}

#[tokio::test]
async fn public_media_is_served_to_anyone_with_long_cache() {
    let app = TestApp::spawn().await;
    faceoff::storage::save(
        &app.pool,
        &app.state.store,
        "showcase/test.jpg",
        jpeg(),
        "image/jpeg",
        Some((64, 48)),
        None,
    )
    .await
    .expect("save");
    let response = app.get("/media/showcase/test.jpg").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "image/jpeg");
    assert_eq!(response.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(response.bytes().await.expect("bytes"), jpeg());
    assert_eq!(app.get("/media/showcase/missing.jpg").await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn private_media_is_only_for_its_owner() {
    let app = TestApp::spawn().await;
    let owner = app.signed_in_user(10).await;
    faceoff::storage::save(&app.pool, &app.state.store, "runs/abc/one.jpg", jpeg(), "image/jpeg", None, Some(owner.id))
        .await
        .expect("save");
    let response = app.get("/media/runs/abc/one.jpg").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["cache-control"].to_str().unwrap_or("").starts_with("private"));

    // Anonymous: as if it did not exist.
    let response = app.browser().get("/media/runs/abc/one.jpg").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // Another user: the same.
    let other = app.create_user("other@example.com", 10).await;
    let others = app.browser();
    others.sign_in(&other).await;
    assert_eq!(others.get("/media/runs/abc/one.jpg").await.status(), StatusCode::NOT_FOUND);
}

#[test]
fn thumbnails_are_small_webp() {
    let (bytes, w, h) = faceoff::storage::thumbnail_webp(&jpeg(), 32).expect("thumbnail");
    assert_eq!((w, h), (32, 24));
    assert_eq!(image::guess_format(&bytes).expect("format"), image::ImageFormat::WebP);
}
