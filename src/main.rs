/// mimalloc instead of glibc's malloc: the server's allocations are many small ones per request
/// (glibc's malloc and free were ~11% of a signed-in page's CPU) and the large, short-lived
/// buffers of image work, which glibc keeps in per-thread arenas (peak RSS over 450 MiB in
/// `bench/run`) where mimalloc returns them to the system: after 10 ms, or at once with
/// `MIMALLOC_PURGE_DELAY=0` (the container image sets it; peak RSS 210 -> 142 MiB in the bench's
/// rendering phase, at the same speed).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    if let Err(err) = faceoff::cli::run().await {
        eprintln!("faceoff: {err:#}");
        std::process::exit(1);
    }
}
