//! A mock model provider for `bench/ai.sh`: the test kit's `MockProvider` on a fixed
//! address, streaming its answers in many paced pieces.
//!
//! Usage: `ai_mock ADDR PACE_MS PIECES` (for example `127.0.0.1:19101 20 50`).

use portico_testkit::MockProvider;
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).and_then(|a| a.parse().ok()).unwrap_or_else(|| "127.0.0.1:19101".parse().expect("address"));
    let pace: u64 = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(20);
    let pieces: usize = args.get(3).and_then(|p| p.parse().ok()).unwrap_or(50);
    let mock = MockProvider::start_on("bench", addr).await;
    mock.set_pace(Duration::from_millis(pace));
    mock.set_stream_pieces(pieces);
    mock.forget_requests();
    let _ = tokio::signal::ctrl_c().await;
}
