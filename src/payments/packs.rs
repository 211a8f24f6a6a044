//! Credit packs: what `/credits` sells, read from the reviewed data file `catalog/packs.toml` and
//! validated at start-up. A bad file stops the process with the line and the reason.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

/// The packs on sale, in the order of the file.
#[derive(Debug, Clone)]
pub struct Packs {
    pub currency: String,
    pub packs: Vec<Pack>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pack {
    pub slug: String,
    pub name: String,
    pub credits: i64,
    /// In the currency's smallest unit (cents).
    pub price_cents: i64,
    pub description: String,
}

/// Why the packs file was rejected: where (1-based line) and what.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file} line {line}: {reason}")]
pub struct PacksError {
    pub file: String,
    pub line: usize,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    currency: Spanned<String>,
    #[serde(default)]
    pack: Vec<Spanned<RawPack>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPack {
    slug: Spanned<String>,
    name: Spanned<String>,
    credits: Spanned<i64>,
    price_cents: Spanned<i64>,
    #[serde(default)]
    description: String,
}

/// The largest pack we accept (a typo guard: a million credits or $100,000).
const MAX_CREDITS: i64 = 1_000_000;
const MAX_PRICE_CENTS: i64 = 10_000_000;

impl Packs {
    /// Loads `catalog/packs.toml` (next to the working directory, else next to the crate).
    pub fn load() -> anyhow::Result<Packs> {
        let path = crate::config::locate_dir("catalog").join("packs.toml");
        Ok(Self::load_file(&path)?)
    }

    pub fn load_file(path: &Path) -> Result<Packs, PacksError> {
        let file = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|err| PacksError {
            file: file.clone(),
            line: 0,
            reason: format!("cannot read the file: {err}"),
        })?;
        Self::parse(&source, &file)
    }

    /// Parses and validates the file's text; `file` names it in errors.
    pub fn parse(source: &str, file: &str) -> Result<Packs, PacksError> {
        let fail = |offset: usize, reason: String| PacksError {
            file: file.to_string(),
            line: line_of(source, offset),
            reason,
        };
        let raw: RawFile = toml::from_str(source).map_err(|err| {
            let offset = err.span().map(|s| s.start).unwrap_or(0);
            fail(offset, err.message().trim().to_string())
        })?;

        let currency = raw.currency.get_ref().trim();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(fail(
                raw.currency.span().start,
                format!("currency {currency:?} must be a lower-case ISO 4217 code such as \"usd\""),
            ));
        }
        if raw.pack.is_empty() {
            return Err(fail(source.len(), "no [[pack]] entries: at least one credit pack is required".into()));
        }
        let mut packs: Vec<Pack> = Vec::with_capacity(raw.pack.len());
        for spanned in &raw.pack {
            let p = spanned.get_ref();
            let slug = p.slug.get_ref().trim();
            if slug.is_empty()
                || slug.len() > 64
                || !slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                || slug.starts_with('-')
                || slug.ends_with('-')
            {
                return Err(fail(
                    p.slug.span().start,
                    format!("slug {slug:?} must be lower-case letters, digits and dashes (e.g. \"starter-200\")"),
                ));
            }
            if packs.iter().any(|q| q.slug == slug) {
                return Err(fail(p.slug.span().start, format!("slug {slug:?} is used by another pack")));
            }
            let name = p.name.get_ref().trim();
            if name.is_empty() || name.len() > 60 {
                return Err(fail(p.name.span().start, "name must be 1 to 60 characters".into()));
            }
            let credits = *p.credits.get_ref();
            if !(1..=MAX_CREDITS).contains(&credits) {
                return Err(fail(
                    p.credits.span().start,
                    format!("credits must be a whole number from 1 to {MAX_CREDITS} (got {credits})"),
                ));
            }
            let price_cents = *p.price_cents.get_ref();
            // Stripe's smallest charge is 50 cents.
            if !(50..=MAX_PRICE_CENTS).contains(&price_cents) {
                return Err(fail(
                    p.price_cents.span().start,
                    format!("price_cents must be from 50 to {MAX_PRICE_CENTS} (got {price_cents})"),
                ));
            }
            packs.push(Pack {
                slug: slug.to_string(),
                name: name.to_string(),
                credits,
                price_cents,
                description: p.description.trim().to_string(),
            });
        }
        Ok(Packs { currency: currency.to_string(), packs })
    }

    pub fn get(&self, slug: &str) -> Option<&Pack> {
        self.packs.iter().find(|p| p.slug == slug)
    }

    /// The price of `cents` in this currency, e.g. `$10.00` (or `10.00 EUR`).
    pub fn money(&self, cents: i64) -> String {
        format_money(cents, &self.currency)
    }

    /// The highest price per credit of any pack (what "save x%" is measured against).
    fn base_rate(&self) -> f64 {
        self.packs.iter().map(Pack::cents_per_credit).fold(0.0, f64::max)
    }

    /// How much cheaper per credit `pack` is than the most expensive pack, in whole percent.
    pub fn savings_percent(&self, pack: &Pack) -> i64 {
        let base = self.base_rate();
        if base <= 0.0 {
            return 0;
        }
        ((1.0 - pack.cents_per_credit() / base) * 100.0).round() as i64
    }
}

impl Pack {
    pub fn cents_per_credit(&self) -> f64 {
        self.price_cents as f64 / self.credits as f64
    }

    /// E.g. `2.5¢` or `1.67¢` (for currencies with cents).
    pub fn price_per_credit(&self) -> String {
        let cents = self.cents_per_credit();
        let text = format!("{cents:.2}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        format!("{text}¢")
    }
}

pub fn format_money(cents: i64, currency: &str) -> String {
    let amount = format!("{}.{:02}", cents / 100, (cents % 100).abs());
    match currency {
        "usd" => format!("${amount}"),
        "eur" => format!("€{amount}"),
        "gbp" => format!("£{amount}"),
        other => format!("{amount} {}", other.to_ascii_uppercase()),
    }
}

fn line_of(source: &str, offset: usize) -> usize {
    let offset = offset.min(source.len());
    source.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "currency = \"usd\"\n\n[[pack]]\nslug = \"starter-200\"\nname = \"Starter\"\ncredits = 200\nprice_cents = 500\n\n[[pack]]\nslug = \"pro-1200\"\nname = \"Pro\"\ncredits = 1200\nprice_cents = 2000\n";

    #[test]
    fn the_shipped_file_is_valid() {
        let packs = Packs::load().expect("catalog/packs.toml");
        let slugs: Vec<_> = packs.packs.iter().map(|p| p.slug.as_str()).collect();
        assert_eq!(slugs, ["starter-200", "standard-500", "pro-1200"]);
        let standard = packs.get("standard-500").expect("standard");
        assert_eq!((standard.credits, standard.price_cents), (500, 1000));
        assert_eq!(packs.money(standard.price_cents), "$10.00");
        assert_eq!(standard.price_per_credit(), "2¢");
        assert_eq!(packs.get("starter-200").map(Pack::price_per_credit).as_deref(), Some("2.5¢"));
        assert_eq!(packs.get("pro-1200").map(Pack::price_per_credit).as_deref(), Some("1.67¢"));
        assert_eq!(packs.savings_percent(standard), 20);
    }

    #[test]
    fn parses_a_good_file() {
        let packs = Packs::parse(GOOD, "packs.toml").expect("good");
        assert_eq!(packs.currency, "usd");
        assert_eq!(packs.packs.len(), 2);
        assert_eq!(packs.packs[1].credits, 1200);
    }

    fn error(source: &str) -> PacksError {
        Packs::parse(source, "packs.toml").expect_err("should be rejected")
    }

    #[test]
    fn errors_name_the_line_and_the_reason() {
        let err = error(&GOOD.replace("credits = 1200", "credits = -5"));
        assert_eq!(err.line, 12, "{err}");
        assert!(err.reason.contains("credits must be"), "{err}");
        assert!(err.to_string().starts_with("packs.toml line 12: "), "{err}");

        let err = error(&GOOD.replace("slug = \"pro-1200\"", "slug = \"starter-200\""));
        assert_eq!(err.line, 10);
        assert!(err.reason.contains("used by another pack"), "{err}");

        let err = error(&GOOD.replace("slug = \"pro-1200\"", "slug = \"Pro 1200\""));
        assert_eq!(err.line, 10);

        let err = error(&GOOD.replace("price_cents = 500", "price_cents = 10"));
        assert_eq!(err.line, 7);
        assert!(err.reason.contains("price_cents"), "{err}");

        let err = error(&GOOD.replace("currency = \"usd\"", "currency = \"US dollars\""));
        assert_eq!(err.line, 1);

        // Syntax and type errors carry toml's own message and position.
        let err = error(&GOOD.replace("credits = 200", "credits = \"lots\""));
        assert_eq!(err.line, 6, "{err}");
        let err = error(&GOOD.replace("name = \"Pro\"", "name = \"Pro\"\ncolour = \"red\""));
        assert_eq!(err.line, 12, "{err}");
        assert!(err.reason.contains("colour"), "{err}");
        let err = error("currency = \"usd\"\n[[pack]\n");
        assert_eq!(err.line, 2, "{err}");

        let err = error("currency = \"usd\"\n");
        assert!(err.reason.contains("at least one"), "{err}");
    }

    #[test]
    fn a_bad_file_names_its_path() {
        let path = std::env::temp_dir().join(format!("faceoff-packs-{}.toml", std::process::id()));
        std::fs::write(&path, GOOD.replace("credits = 200", "credits = 0")).expect("write");
        let err = Packs::load_file(&path).expect_err("rejected");
        std::fs::remove_file(&path).ok();
        assert_eq!(
            err.to_string(),
            format!("{} line 6: credits must be a whole number from 1 to 1000000 (got 0)", path.display())
        );
        let err = Packs::load_file(Path::new("/nonexistent/packs.toml")).expect_err("missing");
        assert!(err.reason.contains("cannot read"), "{err}");
    }
}
