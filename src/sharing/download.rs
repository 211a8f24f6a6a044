//! "Download all": a run's originals and a `prompt.txt` (prompt and settings) as one ZIP,
//! written while it is sent. Entries are STORED (the images are compressed already), with data
//! descriptors, so nothing needs to be known before the bytes go out: each original is read from
//! the object store in chunks and passed through a small pipe ([`PIPE_BYTES`]) to the response,
//! so a download holds a few hundred KiB whatever the images weigh (measured in the issue-16
//! note). Limits: [`CONCURRENT`] downloads per process (more get 503 and `Retry-After`),
//! [`MAX_TOTAL_BYTES`] per archive and [`DEADLINE`] to send it all (a stalled client is cut off
//! and its permit freed).

use std::time::Duration;

use async_zip::{Compression, ZipEntryBuilder, base::write::ZipFileWriter};
use bytes::Bytes;
use futures::{AsyncWriteExt as _, Stream, StreamExt};
use tokio::{io::AsyncWriteExt as _, sync::Semaphore};
use tokio_util::io::ReaderStream;

use crate::storage::Store;

/// Downloads streamed at once by this process.
pub const CONCURRENT: usize = 4;
/// The largest archive (sum of the originals).
pub const MAX_TOTAL_BYTES: i64 = 512 << 20;
/// How long one download may take.
pub const DEADLINE: Duration = Duration::from_secs(15 * 60);
/// The buffer between the ZIP writer and the response.
pub const PIPE_BYTES: usize = 64 * 1024;

static PERMITS: Semaphore = Semaphore::const_new(CONCURRENT);

/// One file of the archive, from the object store.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub key: String,
}

/// A slot to stream a download, or `None` when [`CONCURRENT`] are running.
pub struct Permit {
    _slot: tokio::sync::SemaphorePermit<'static>,
}

pub fn try_permit() -> Option<Permit> {
    PERMITS.try_acquire().ok().map(|slot| Permit { _slot: slot })
}

/// The archive of `entries` plus `prompt.txt`, as a stream of chunks. A failure half-way (an
/// object missing, the store failing, the deadline) ends the stream with an error, so the client
/// sees a broken download rather than a ZIP that looks complete.
pub fn stream(
    store: Store,
    entries: Vec<Entry>,
    prompt_txt: String,
    permit: Permit,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let (writer, reader) = tokio::io::duplex(PIPE_BYTES);
    let task = tokio::spawn(async move {
        let _permit = permit;
        match tokio::time::timeout(DEADLINE, write(store, entries, prompt_txt, writer)).await {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!("the download took longer than {} s", DEADLINE.as_secs())),
        }
    });
    // Polled once the pipe is drained: the writer's outcome.
    let tail = futures::stream::once(async move {
        match task.await {
            Ok(Ok(())) => None,
            Ok(Err(err)) => {
                tracing::warn!("download: {err:#}");
                Some(Err(std::io::Error::other(err.to_string())))
            }
            Err(err) => Some(Err(std::io::Error::other(err.to_string()))),
        }
    })
    .filter_map(|item| async move { item });
    ReaderStream::with_capacity(reader, PIPE_BYTES).chain(tail)
}

async fn write(
    store: Store,
    entries: Vec<Entry>,
    prompt_txt: String,
    pipe: tokio::io::DuplexStream,
) -> anyhow::Result<()> {
    let mut zip = ZipFileWriter::with_tokio(pipe);
    for entry in entries {
        let mut chunks =
            store.get_stream(&entry.key).await?.ok_or_else(|| anyhow::anyhow!("{} is no longer stored", entry.key))?;
        let mut file =
            zip.write_entry_stream(ZipEntryBuilder::new(entry.name.clone().into(), Compression::Stored)).await?;
        while let Some(chunk) = chunks.next().await {
            file.write_all(&chunk?).await?;
        }
        file.close().await?;
    }
    zip.write_entry_whole(
        ZipEntryBuilder::new("prompt.txt".to_string().into(), Compression::Stored),
        prompt_txt.as_bytes(),
    )
    .await?;
    let mut pipe = zip.close().await?.into_inner();
    pipe.shutdown().await?;
    Ok(())
}

/// A file name for an entry: `01-flux-2.png`.
pub fn entry_name(index: usize, choice: &str, content_type: &str) -> String {
    let ext = match content_type {
        "image/png" => "png",
        "image/webp" => "webp",
        _ => "jpg",
    };
    let slug: String = choice
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c.to_ascii_lowercase() } else { '-' })
        .collect();
    format!("{:02}-{slug}.{ext}", index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_plain() {
        assert_eq!(entry_name(0, "flux-2", "image/jpeg"), "01-flux-2.jpg");
        assert_eq!(entry_name(3, "flux-2:klein-9b", "image/png"), "04-flux-2-klein-9b.png");
    }
}
