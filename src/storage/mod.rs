//! Storage: generated and uploaded images in an object store (a local directory by default,
//! S3-compatible with `FACEOFF_STORAGE_URL=s3://bucket/prefix`), recorded in `media_object` with
//! their owner. Also makes the WebP thumbnails shown in lists. [`routes`] serves them at
//! `/media/{key}` with access control.

pub mod images;
pub mod routes;
pub mod text;

use std::{io::Cursor, sync::Arc};

use anyhow::Context;
use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path as ObjectPath};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// The object store holding media bytes.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({}, prefix {:?})", self.inner, self.prefix)
    }
}

impl Store {
    /// `file:///abs/dir`, `s3://bucket/prefix` (credentials and endpoint from the usual `AWS_*`
    /// variables; `AWS_ENDPOINT` and `AWS_ALLOW_HTTP=true` for MinIO/R2) or `memory://`.
    pub fn from_url(url: &str) -> anyhow::Result<Store> {
        if let Some(dir) = url.strip_prefix("file://") {
            std::fs::create_dir_all(dir).with_context(|| format!("creating the media directory {dir}"))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(dir)?;
            return Ok(Store { inner: Arc::new(store), prefix: String::new() });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let store = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket).build()?;
            return Ok(Store { inner: Arc::new(store), prefix: prefix.trim_matches('/').to_string() });
        }
        if url == "memory://" {
            return Ok(Store { inner: Arc::new(object_store::memory::InMemory::new()), prefix: String::new() });
        }
        anyhow::bail!("unsupported FACEOFF_STORAGE_URL {url:?}")
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() { ObjectPath::from(key) } else { ObjectPath::from(format!("{}/{key}", self.prefix)) }
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> anyhow::Result<()> {
        self.inner.put(&self.path(key), PutPayload::from(bytes)).await.with_context(|| format!("storing {key}"))?;
        Ok(())
    }

    /// Deletes the object under `key` (a missing object is not an error).
    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        match self.inner.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err).with_context(|| format!("deleting {key}")),
        }
    }

    /// Every stored object: its key and when it was last written (Unix seconds).
    fn list(&self) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        self.inner.list(prefix.as_ref())
    }

    /// The key of a listed object (its path without the store's prefix).
    fn key_of(&self, location: &ObjectPath) -> String {
        let path = location.as_ref();
        match self.prefix.is_empty() {
            true => path.to_string(),
            false => path.strip_prefix(&format!("{}/", self.prefix)).unwrap_or(path).to_string(),
        }
    }

    /// The object under `key` as a stream of chunks (read as they are sent on: a large object is
    /// never held whole in memory), or `None` when it is not stored.
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> anyhow::Result<Option<futures::stream::BoxStream<'static, object_store::Result<Bytes>>>> {
        match self.inner.get(&self.path(key)).await {
            Ok(result) => Ok(Some(result.into_stream())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(err).with_context(|| format!("reading {key}")),
        }
    }

    pub async fn get(&self, key: &str) -> anyhow::Result<Option<Bytes>> {
        match self.inner.get(&self.path(key)).await {
            Ok(result) => Ok(Some(result.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(err).with_context(|| format!("reading {key}")),
        }
    }
}

/// A stored image's metadata.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Media {
    pub key: String,
    pub content_type: String,
    pub byte_size: i64,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub owner_user_id: Option<Uuid>,
}

impl Media {
    pub fn url(&self) -> String {
        format!("/media/{}", self.key)
    }
}

/// Stores `bytes` under `key` and records it (idempotent: storing the same key again keeps the
/// first record). `owner`: `None` makes it public.
pub async fn save(
    db: impl PgExecutor<'_>,
    store: &Store,
    key: &str,
    bytes: Bytes,
    content_type: &str,
    size: Option<(u32, u32)>,
    owner: Option<Uuid>,
) -> anyhow::Result<Media> {
    let byte_size = bytes.len();
    store.put(key, bytes).await?;
    Ok(record(db, key, content_type, byte_size, size, owner).await?)
}

/// Records an object stored (or about to be stored, in the same transaction) under `key`.
pub async fn record(
    db: impl PgExecutor<'_>,
    key: &str,
    content_type: &str,
    byte_size: usize,
    size: Option<(u32, u32)>,
    owner: Option<Uuid>,
) -> Result<Media, sqlx::Error> {
    sqlx::query_as::<_, Media>(
        "INSERT INTO media_object (key, content_type, byte_size, width, height, owner_user_id)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key
         RETURNING key, content_type, byte_size, width, height, owner_user_id",
    )
    .bind(key)
    .bind(content_type)
    .bind(byte_size as i64)
    .bind(size.map(|s| s.0 as i32))
    .bind(size.map(|s| s.1 as i32))
    .bind(owner)
    .fetch_one(db)
    .await
}

/// How long an object may exist without its `media_object` row before [`sweep_orphans`] deletes
/// it: longer than any transaction that stores bytes before it commits their row.
pub const ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes stored objects that no `media_object` row owns and that are older than `grace` (the
/// bytes of a run whose transaction failed after they were written). Returns how many it deleted.
pub async fn sweep_orphans(pool: &PgPool, store: &Store, grace: std::time::Duration) -> anyhow::Result<u64> {
    use futures::StreamExt;
    let cutoff = time::OffsetDateTime::now_utc().unix_timestamp() - grace.as_secs() as i64;
    let mut listed = store.list().chunks(500);
    let mut deleted = 0;
    while let Some(batch) = listed.next().await {
        let old: Vec<String> = batch
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|meta| meta.last_modified.timestamp() <= cutoff)
            .map(|meta| store.key_of(&meta.location))
            .collect();
        if old.is_empty() {
            continue;
        }
        let owned: Vec<String> =
            sqlx::query_scalar("SELECT key FROM media_object WHERE key = ANY($1)").bind(&old).fetch_all(pool).await?;
        for key in old.iter().filter(|k| !owned.contains(k)) {
            store.delete(key).await?;
            deleted += 1;
            tracing::info!(key, "deleted a stored object no row owns");
        }
    }
    Ok(deleted)
}

pub async fn find(db: impl PgExecutor<'_>, key: &str) -> Result<Option<Media>, sqlx::Error> {
    sqlx::query_as::<_, Media>(
        "SELECT key, content_type, byte_size, width, height, owner_user_id FROM media_object WHERE key = $1",
    )
    .bind(key)
    .fetch_optional(db)
    .await
}

/// A WebP thumbnail (lossless: the `image` crate has no lossy WebP encoder) whose longer side is
/// at most `max_side`, of a generated image. CPU-bound: run it in [`images::run`].
pub fn thumbnail_webp(bytes: &[u8], max_side: u32) -> anyhow::Result<(Bytes, u32, u32)> {
    let img = images::decode(bytes, &images::GENERATED).context("decoding image for thumbnail")?;
    let thumb = img.thumbnail(max_side, max_side);
    let mut out = Cursor::new(Vec::new());
    thumb.to_rgb8().write_to(&mut out, image::ImageFormat::WebP)?;
    Ok((Bytes::from(out.into_inner()), thumb.width(), thumb.height()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_refuse_images_too_large_to_decode() {
        let bomb = images::tests::png_bomb(16_384);
        assert!(thumbnail_webp(&bomb, 512).is_err(), "a generated image is decoded under the same limits");
    }
}
