//! The arena's rating maths, pure (no I/O): a Bradley–Terry fit over blind votes, seeded
//! bootstrap intervals, ranks that overlapping intervals share, expected win rate against the
//! board and cost per win.
//!
//! - A vote is the entries shown (2–4 model indices) and its outcome. "Pick the best" among k
//!   becomes k−1 pairwise wins of the winner, each weighted 1/(k−1); a tie, "both bad" or "all
//!   bad" becomes every pair as half a win each, weighted 1/C(k,2): every vote weighs 1.
//! - The model: `P(i beats j) = σ(θ_i − θ_j)`, fitted by Newton's method on the log-likelihood
//!   plus one pseudo-game (half won, half lost) of each entry against a virtual player at θ = 0,
//!   which keeps the fit finite and unique for unbeaten entries and disconnected boards.
//!   Ratings are `1000 + 400·log10(e)·θ`, centred so that the board's mean is 1000.
//! - Intervals: `bootstrap` replicates resample whole votes with replacement (seeded RNG), refit
//!   from the full fit, and take the 2.5 and 97.5 percentiles of every derived number.
//! - Rank (upper bound): 1 + the number of ranked entries whose lower bound is above this
//!   entry's upper bound, so entries whose intervals overlap share a rank. Entries with fewer
//!   than `min_votes` votes are provisional: rated, never ranked.
//! - Expected win rate: `mean_{j≠i} σ(θ_i − θ_j)` over the board's other entries; cost per win
//!   = price / expected win rate.

use std::collections::HashMap;

use rand::{Rng, SeedableRng, rngs::StdRng};

/// 400 / ln 10: rating points per unit of θ.
pub const SCALE: f64 = 173.717_792_761_245_6;

/// What the voter chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The entry at this position of `Vote::entries` is the best.
    Best(u8),
    /// A tie (two entries) or "all similar".
    Tie,
    /// "Both bad" / "all bad": scored as a tie.
    AllBad,
}

/// One counted vote: the entries shown (indices into the board's entries) and the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Vote {
    pub entries: Vec<u16>,
    pub outcome: Outcome,
}

impl Vote {
    /// The weighted pairwise results: (i, j, score of i, weight), every vote weighing 1.
    pub fn pairs(&self) -> Vec<(usize, usize, f64, f64)> {
        let k = self.entries.len();
        if k < 2 {
            return Vec::new();
        }
        match self.outcome {
            Outcome::Best(w) => {
                let w = usize::from(w);
                let Some(&winner) = self.entries.get(w) else { return Vec::new() };
                let weight = 1.0 / (k - 1) as f64;
                (0..k)
                    .filter(|&j| j != w && self.entries[j] != winner)
                    .map(|j| (usize::from(winner), usize::from(self.entries[j]), 1.0, weight))
                    .collect()
            }
            Outcome::Tie | Outcome::AllBad => {
                let weight = 1.0 / (k * (k - 1) / 2) as f64;
                let mut out = Vec::with_capacity(k * (k - 1) / 2);
                for a in 0..k {
                    for b in a + 1..k {
                        if self.entries[a] != self.entries[b] {
                            out.push((usize::from(self.entries[a]), usize::from(self.entries[b]), 0.5, weight));
                        }
                    }
                }
                out
            }
        }
    }
}

/// Settings of a fit.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Bootstrap replicates (0: no intervals).
    pub bootstrap: usize,
    pub seed: u64,
    /// Votes an entry needs before it is ranked.
    pub min_votes: u64,
    /// Pseudo-games against the virtual player (the prior's strength).
    pub prior_games: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { bootstrap: 200, seed: 0, min_votes: 30, prior_games: 1.0 }
    }
}

/// A 95% interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

/// One entry's result on a board.
#[derive(Debug, Clone)]
pub struct Rated {
    pub index: usize,
    pub rating: f64,
    pub interval: Interval,
    /// Rank (upper bound); `None` while provisional.
    pub rank: Option<u32>,
    pub provisional: bool,
    /// Votes this entry took part in.
    pub votes: u64,
    /// Observed `(wins + ½·ties) / battles`, weighted as the fit weighs them (None without battles).
    pub win_rate: Option<f64>,
    /// `mean_{j≠i} σ(θ_i − θ_j)`.
    pub expected_win_rate: f64,
    pub expected_win_rate_interval: Interval,
    /// `price / expected_win_rate` (when a price is given).
    pub cost_per_win: Option<f64>,
    pub cost_per_win_interval: Option<Interval>,
}

/// The board's aggregated pairwise matrix: `wins[i][j]` = weighted score of i against j,
/// `games[i][j]` = weighted games between them (symmetric).
struct Cells {
    n: usize,
    wins: Vec<f64>,
    games: Vec<f64>,
}

impl Cells {
    fn new(n: usize) -> Cells {
        Cells { n, wins: vec![0.0; n * n], games: vec![0.0; n * n] }
    }

    fn clear(&mut self) {
        self.wins.iter_mut().for_each(|x| *x = 0.0);
        self.games.iter_mut().for_each(|x| *x = 0.0);
    }

    fn add(&mut self, pairs: &[(usize, usize, f64, f64)], times: f64) {
        let n = self.n;
        for &(i, j, s, w) in pairs {
            let w = w * times;
            self.wins[i * n + j] += s * w;
            self.wins[j * n + i] += (1.0 - s) * w;
            self.games[i * n + j] += w;
            self.games[j * n + i] += w;
        }
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn log_likelihood(c: &Cells, theta: &[f64], prior: f64) -> f64 {
    let n = c.n;
    let mut l = 0.0;
    for i in 0..n {
        for j in 0..n {
            let w = c.wins[i * n + j];
            if w > 0.0 {
                l += w * ln_sigmoid(theta[i] - theta[j]);
            }
        }
        l += prior * 0.5 * (ln_sigmoid(theta[i]) + ln_sigmoid(-theta[i]));
    }
    l
}

fn ln_sigmoid(x: f64) -> f64 {
    if x >= 0.0 { -(-x).exp().ln_1p() } else { x - x.exp().ln_1p() }
}

/// Newton's method on the penalised log-likelihood, from `theta` (warm start), in place.
fn fit(c: &Cells, theta: &mut [f64], prior: f64) {
    let n = c.n;
    let mut grad = vec![0.0; n];
    let mut hess = vec![0.0; n * n];
    let mut current = log_likelihood(c, theta, prior);
    for _ in 0..100 {
        grad.iter_mut().for_each(|x| *x = 0.0);
        hess.iter_mut().for_each(|x| *x = 0.0);
        for i in 0..n {
            for j in i + 1..n {
                let g = c.games[i * n + j];
                if g <= 0.0 {
                    continue;
                }
                let p = sigmoid(theta[i] - theta[j]);
                let r = c.wins[i * n + j] - g * p;
                grad[i] += r;
                grad[j] -= r;
                let h = g * p * (1.0 - p);
                hess[i * n + i] += h;
                hess[j * n + j] += h;
                hess[i * n + j] -= h;
                hess[j * n + i] -= h;
            }
            let p = sigmoid(theta[i]);
            grad[i] += prior * (0.5 - p);
            hess[i * n + i] += prior * p * (1.0 - p);
        }
        let Some(step) = solve_spd(&hess, &grad, n) else { break };
        let mut t = 1.0;
        let mut next = theta.to_vec();
        let mut improved = false;
        for _ in 0..30 {
            for i in 0..n {
                next[i] = theta[i] + t * step[i];
            }
            let l = log_likelihood(c, &next, prior);
            if l >= current - 1e-12 {
                current = l;
                improved = true;
                break;
            }
            t *= 0.5;
        }
        if !improved {
            break;
        }
        let moved = (0..n).map(|i| (next[i] - theta[i]).abs()).fold(0.0, f64::max);
        theta.copy_from_slice(&next);
        if moved < 1e-9 {
            break;
        }
    }
}

/// Solves `A x = b` for a symmetric positive definite `A` (Cholesky).
fn solve_spd(a: &[f64], b: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut sum = a[i * n + j];
            for k in 0..j {
                sum -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if sum <= 0.0 || !sum.is_finite() {
                    return None;
                }
                l[i * n + i] = sum.sqrt();
            } else {
                l[i * n + j] = sum / l[j * n + j];
            }
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        let mut sum = b[i];
        for k in 0..i {
            sum -= l[i * n + k] * y[k];
        }
        y[i] = sum / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let mut sum = y[i];
        for k in i + 1..n {
            sum -= l[k * n + i] * x[k];
        }
        x[i] = sum / l[i * n + i];
    }
    Some(x)
}

/// Ratings centred on 1000 over the board.
fn ratings(theta: &[f64]) -> Vec<f64> {
    let mean = theta.iter().sum::<f64>() / theta.len().max(1) as f64;
    theta.iter().map(|t| 1000.0 + SCALE * (t - mean)).collect()
}

fn expected_win_rates(theta: &[f64]) -> Vec<f64> {
    let n = theta.len();
    (0..n)
        .map(|i| {
            if n < 2 {
                return 0.5;
            }
            (0..n).filter(|&j| j != i).map(|j| sigmoid(theta[i] - theta[j])).sum::<f64>() / (n - 1) as f64
        })
        .collect()
}

fn percentile_interval(values: &mut [f64]) -> Interval {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let pos = q * (values.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
    };
    Interval { lo: at(0.025), hi: at(0.975) }
}

/// The win chance of entry `a` against entry `b` with its bootstrap interval, from a
/// [`Board`]'s thetas.
pub fn head_to_head(board: &Board, a: usize, b: usize) -> (f64, Interval) {
    let p = sigmoid(board.theta[a] - board.theta[b]);
    if board.replicates.is_empty() {
        return (p, Interval { lo: p, hi: p });
    }
    let mut values: Vec<f64> = board.replicates.iter().map(|t| sigmoid(t[a] - t[b])).collect();
    (p, percentile_interval(&mut values))
}

/// A fitted board.
#[derive(Debug, Clone)]
pub struct Board {
    pub entries: Vec<Rated>,
    pub theta: Vec<f64>,
    replicates: Vec<Vec<f64>>,
    pub votes: u64,
}

/// Fits a board of `n` entries from its votes. `prices[i]` (credits per image) gives cost per
/// win; entries that took part in no vote are still returned (rated at the prior, provisional).
pub fn rate(n: usize, votes: &[Vote], prices: &[Option<f64>], settings: &Settings) -> Board {
    // Identical votes are one pattern with a count: the fit works on aggregated cells, and the
    // bootstrap draws votes by index into the pattern table.
    let mut index: HashMap<&Vote, u32> = HashMap::new();
    let mut patterns: Vec<Vec<(usize, usize, f64, f64)>> = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    let mut of_vote: Vec<u32> = Vec::with_capacity(votes.len());
    let mut appearances = vec![0u64; n];
    for vote in votes {
        if vote.entries.iter().any(|&e| usize::from(e) >= n) {
            continue;
        }
        let p = *index.entry(vote).or_insert_with(|| {
            patterns.push(vote.pairs());
            counts.push(0);
            (patterns.len() - 1) as u32
        });
        counts[p as usize] += 1;
        of_vote.push(p);
        let mut seen: Vec<u16> = vote.entries.clone();
        seen.sort_unstable();
        seen.dedup();
        for e in seen {
            appearances[usize::from(e)] += 1;
        }
    }

    let mut cells = Cells::new(n);
    for (pairs, &count) in patterns.iter().zip(&counts) {
        cells.add(pairs, count as f64);
    }
    let mut theta = vec![0.0; n];
    fit(&cells, &mut theta, settings.prior_games);

    let mut replicates = Vec::with_capacity(settings.bootstrap);
    if !of_vote.is_empty() {
        let mut rng = StdRng::seed_from_u64(settings.seed);
        let mut drawn = vec![0u32; patterns.len()];
        for _ in 0..settings.bootstrap {
            drawn.iter_mut().for_each(|x| *x = 0);
            let total = of_vote.len();
            for _ in 0..total {
                drawn[of_vote[rng.random_range(0..total)] as usize] += 1;
            }
            cells.clear();
            for (pairs, &count) in patterns.iter().zip(&drawn) {
                if count > 0 {
                    cells.add(pairs, f64::from(count));
                }
            }
            let mut t = theta.clone();
            fit(&cells, &mut t, settings.prior_games);
            replicates.push(t);
        }
    }

    // Observed win rates from the full data.
    cells.clear();
    for (pairs, &count) in patterns.iter().zip(&counts) {
        cells.add(pairs, count as f64);
    }
    let full_ratings = ratings(&theta);
    let full_ewr = expected_win_rates(&theta);
    let rep_ratings: Vec<Vec<f64>> = replicates.iter().map(|t| ratings(t)).collect();
    let rep_ewr: Vec<Vec<f64>> = replicates.iter().map(|t| expected_win_rates(t)).collect();

    let mut entries: Vec<Rated> = (0..n)
        .map(|i| {
            let interval_of = |values: &mut Vec<f64>, full: f64| {
                if values.is_empty() { Interval { lo: full, hi: full } } else { percentile_interval(values) }
            };
            let interval = interval_of(&mut rep_ratings.iter().map(|r| r[i]).collect(), full_ratings[i]);
            let ewr_interval = interval_of(&mut rep_ewr.iter().map(|r| r[i]).collect(), full_ewr[i]);
            let price = prices.get(i).copied().flatten();
            let cost_per_win = price.map(|p| p / full_ewr[i]);
            let cost_per_win_interval = price.map(|p| {
                let mut values: Vec<f64> = rep_ewr.iter().map(|r| p / r[i]).collect();
                interval_of(&mut values, p / full_ewr[i])
            });
            let games: f64 = (0..n).map(|j| cells.games[i * n + j]).sum();
            let wins: f64 = (0..n).map(|j| cells.wins[i * n + j]).sum();
            Rated {
                index: i,
                rating: full_ratings[i],
                interval,
                rank: None,
                provisional: appearances[i] < settings.min_votes,
                votes: appearances[i],
                win_rate: (games > 0.0).then(|| wins / games),
                expected_win_rate: full_ewr[i],
                expected_win_rate_interval: ewr_interval,
                cost_per_win,
                cost_per_win_interval,
            }
        })
        .collect();

    let ranked: Vec<(f64, f64)> =
        entries.iter().filter(|e| !e.provisional).map(|e| (e.interval.lo, e.interval.hi)).collect();
    for e in entries.iter_mut().filter(|e| !e.provisional) {
        let above = ranked.iter().filter(|(lo, _)| *lo > e.interval.hi).count();
        e.rank = Some(1 + above as u32);
    }

    Board { entries, theta, replicates, votes: of_vote.len() as u64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two(a: u16, b: u16, outcome: Outcome) -> Vote {
        Vote { entries: vec![a, b], outcome }
    }

    fn no_bootstrap() -> Settings {
        Settings { bootstrap: 0, seed: 0, min_votes: 1, prior_games: 1.0 }
    }

    #[test]
    fn pairs_weigh_one_per_vote() {
        let best = Vote { entries: vec![3, 1, 2], outcome: Outcome::Best(1) };
        let pairs = best.pairs();
        assert_eq!(pairs, vec![(1, 3, 1.0, 0.5), (1, 2, 1.0, 0.5)]);
        let bad = Vote { entries: vec![0, 1, 2, 3], outcome: Outcome::AllBad };
        let pairs = bad.pairs();
        assert_eq!(pairs.len(), 6);
        assert!(pairs.iter().all(|p| p.2 == 0.5));
        assert!((pairs.iter().map(|p| p.3).sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(two(0, 1, Outcome::Tie).pairs(), vec![(0, 1, 0.5, 1.0)]);
    }

    /// Hand-checked: two entries, A wins 3 of 4 votes. With one pseudo-game each against θ = 0
    /// the optimum is symmetric (θ_B = −θ_A = −t) and solves
    /// `3 − 4σ(2t) + (½ − σ(t)) = 0`; by bisection t = 0.474443 (σ(2t) = 0.72089):
    /// without the prior the MLE would be ln 3 / 2 = 0.5493, the prior pulls it in a little.
    #[test]
    fn hand_checked_two_entries() {
        let votes = vec![
            two(0, 1, Outcome::Best(0)),
            two(0, 1, Outcome::Best(0)),
            two(1, 0, Outcome::Best(1)),
            two(0, 1, Outcome::Best(1)),
        ];
        let board = rate(2, &votes, &[Some(4.0), Some(2.0)], &no_bootstrap());
        let t = board.theta[0];
        assert!((board.theta[0] + board.theta[1]).abs() < 1e-9);
        // The stationarity condition holds.
        let g = 3.0 - 4.0 * sigmoid(2.0 * t) + (0.5 - sigmoid(t));
        assert!(g.abs() < 1e-9, "gradient {g}");
        assert!((t - 0.474_443_45).abs() < 1e-6, "theta {t}");
        let a = &board.entries[0];
        assert!((a.rating - (1000.0 + SCALE * t)).abs() < 1e-9);
        assert!((a.win_rate.unwrap_or(0.0) - 0.75).abs() < 1e-12);
        assert!((a.expected_win_rate - sigmoid(2.0 * t)).abs() < 1e-12);
        assert!((a.cost_per_win.unwrap_or(0.0) - 4.0 / sigmoid(2.0 * t)).abs() < 1e-9);
        assert_eq!(board.entries[1].votes, 4);
    }

    /// A tie is half a win each: one tie and one win for A equals 1.5 of 2 for A.
    #[test]
    fn ties_are_half_wins() {
        let with_tie = rate(2, &[two(0, 1, Outcome::Tie), two(0, 1, Outcome::Best(0))], &[], &no_bootstrap());
        let with_bad = rate(2, &[two(0, 1, Outcome::AllBad), two(0, 1, Outcome::Best(0))], &[], &no_bootstrap());
        assert!((with_tie.theta[0] - with_bad.theta[0]).abs() < 1e-12);
        assert!((with_tie.entries[0].win_rate.unwrap_or(0.0) - 0.75).abs() < 1e-12);
        assert!(with_tie.theta[0] > 0.0);
    }

    /// An unbeaten entry and an entry with no votes stay finite.
    #[test]
    fn unbeaten_and_unseen_stay_finite() {
        let votes: Vec<Vote> = (0..50).map(|_| two(0, 1, Outcome::Best(0))).collect();
        let board = rate(3, &votes, &[], &Settings { min_votes: 10, ..Settings::default() });
        assert!(board.theta.iter().all(|t| t.is_finite()));
        assert!(board.entries[2].provisional);
        assert_eq!(board.entries[2].rank, None);
        assert_eq!(board.entries[0].rank, Some(1));
        assert_eq!(board.entries[1].rank, Some(2));
    }

    fn normal(rng: &mut StdRng) -> f64 {
        let u1: f64 = rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = rng.random();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Draws true strengths, simulates votes of 2–4 entries, and checks that the fit recovers
    /// the order and that the 95% intervals cover the true (centred) ratings about 95% of the
    /// time.
    #[test]
    fn synthetic_recovery_and_coverage() {
        let n = 8;
        let mut covered = 0;
        let mut total = 0;
        for trial in 0..12u64 {
            let mut rng = StdRng::seed_from_u64(1000 + trial);
            let truth: Vec<f64> = (0..n).map(|_| 0.6 * normal(&mut rng)).collect();
            let mut votes = Vec::new();
            for v in 0..3000 {
                let k = 2 + v % 3;
                let mut entries: Vec<u16> = Vec::new();
                while entries.len() < k {
                    let e = rng.random_range(0..n as u16);
                    if !entries.contains(&e) {
                        entries.push(e);
                    }
                }
                // Pick the best by the Plackett–Luce first choice (softmax of strengths), which
                // for two entries is exactly Bradley–Terry.
                let weights: Vec<f64> = entries.iter().map(|&e| truth[usize::from(e)].exp()).collect();
                let mut x = rng.random::<f64>() * weights.iter().sum::<f64>();
                let mut best = 0;
                for (i, w) in weights.iter().enumerate() {
                    if x < *w {
                        best = i;
                        break;
                    }
                    x -= w;
                }
                votes.push(Vote { entries, outcome: Outcome::Best(best as u8) });
            }
            let board = rate(n, &votes, &[], &Settings { bootstrap: 100, seed: trial, min_votes: 1, prior_games: 1.0 });
            let true_ratings = ratings(&truth);
            for e in &board.entries {
                total += 1;
                if e.interval.lo <= true_ratings[e.index] && true_ratings[e.index] <= e.interval.hi {
                    covered += 1;
                }
            }
            // Order: Kendall's tau between fitted and true strengths.
            let mut concordant = 0i32;
            let mut pairs = 0i32;
            for i in 0..n {
                for j in i + 1..n {
                    pairs += 1;
                    if (board.theta[i] - board.theta[j]) * (truth[i] - truth[j]) > 0.0 {
                        concordant += 1;
                    }
                }
            }
            let tau = f64::from(2 * concordant - pairs) / f64::from(pairs);
            assert!(tau > 0.75, "trial {trial}: tau {tau}");
            let best_true = (0..n).max_by(|&a, &b| truth[a].total_cmp(&truth[b])).unwrap_or(0);
            assert_eq!(board.entries[best_true].rank, Some(1), "trial {trial}");
        }
        let coverage = f64::from(covered) / f64::from(total);
        // 96 intervals: 95% ± about 2 standard errors.
        assert!((0.88..=0.995).contains(&coverage), "coverage {coverage}");
    }
}
