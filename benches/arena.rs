//! Benchmark: the arena's recompute — the Bradley–Terry fit with its bootstrap — for 100,000
//! and 1,000,000 votes over 20 models, as one board is recomputed in the background.
//!
//! `cargo bench --bench arena` (release). Votes are simulated from drawn strengths: two to four
//! models each (half the votes two, a quarter three, a quarter four), "pick the best" with a
//! tenth ties or "all bad". It prints the time of the fit alone and of the fit with
//! `BENCH_BOOTSTRAP` (200) replicates. No database: loading votes is a single indexed scan and
//! is not measured here.

use std::time::Instant;

use faceoff::arena::rating::{self, Outcome, Settings, Vote};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn simulate(n: usize, models: usize, rng: &mut StdRng) -> Vec<Vote> {
    let strengths: Vec<f64> = (0..models).map(|i| (i as f64) * 0.08).collect();
    (0..n)
        .map(|v| {
            let k = match v % 4 {
                0 | 1 => 2,
                2 => 3,
                _ => 4,
            };
            let mut entries: Vec<u16> = Vec::with_capacity(k);
            while entries.len() < k {
                let e = rng.random_range(0..models as u16);
                if !entries.contains(&e) {
                    entries.push(e);
                }
            }
            let outcome = if rng.random::<f64>() < 0.1 {
                if k == 2 && rng.random::<bool>() { Outcome::Tie } else { Outcome::AllBad }
            } else {
                let weights: Vec<f64> = entries.iter().map(|&e| strengths[usize::from(e)].exp()).collect();
                let mut x = rng.random::<f64>() * weights.iter().sum::<f64>();
                let mut best = 0;
                for (i, w) in weights.iter().enumerate() {
                    if x < *w {
                        best = i;
                        break;
                    }
                    x -= w;
                }
                Outcome::Best(best as u8)
            };
            Vote { entries, outcome }
        })
        .collect()
}

/// CPU seconds this process has used (Linux: `/proc/self/stat`, 100 ticks a second), so the
/// numbers mean something on a machine shared with other work; `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn main() {
    let bootstrap: usize = std::env::var("BENCH_BOOTSTRAP").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let models = 20;
    let prices: Vec<Option<f64>> = (0..models).map(|i| Some(10.0 + i as f64)).collect();
    println!("arena recompute, {models} models, bootstrap {bootstrap}");
    println!("| votes | fit only | fit + bootstrap | per replicate | CPU (fit + bootstrap) |");
    println!("|---:|---:|---:|---:|---:|");
    for n in [100_000usize, 1_000_000] {
        let mut rng = StdRng::seed_from_u64(42);
        let votes = simulate(n, models, &mut rng);
        let started = Instant::now();
        let plain =
            rating::rate(models, &votes, &prices, &Settings { bootstrap: 0, seed: 0, min_votes: 30, prior_games: 1.0 });
        let fit = started.elapsed();
        let cpu_before = cpu_seconds();
        let started = Instant::now();
        let full =
            rating::rate(models, &votes, &prices, &Settings { bootstrap, seed: 0, min_votes: 30, prior_games: 1.0 });
        let total = started.elapsed();
        let best = full.entries.iter().max_by(|a, b| a.rating.total_cmp(&b.rating)).map(|e| e.index);
        assert_eq!(best, Some(models - 1), "the strongest model is on top");
        assert!((plain.theta[0] - full.theta[0]).abs() < 1e-9);
        let cpu = match (cpu_before, cpu_seconds()) {
            (Some(a), Some(b)) => format!("{:.2} s", b - a),
            _ => "–".into(),
        };
        println!(
            "| {n} | {:.3} s | {:.2} s | {:.1} ms | {cpu} |",
            fit.as_secs_f64(),
            total.as_secs_f64(),
            (total - fit).as_secs_f64() * 1000.0 / bootstrap.max(1) as f64
        );
    }
}
