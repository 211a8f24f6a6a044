#[tokio::main]
async fn main() {
    if let Err(err) = faceoff::cli::run().await {
        eprintln!("faceoff: {err:#}");
        std::process::exit(1);
    }
}
