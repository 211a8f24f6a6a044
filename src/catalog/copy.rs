//! Copy generated from the catalog facts, for comparison pages that have no editorial text yet
//! (intro, strengths, verdict, FAQ), the feature table of the seed comparison, and small text
//! helpers. Every fact comes from the catalog, so the words cannot drift from the data.

use super::{Faq, Mode, Model, UseCase};

/// Shortens text to at most `max` characters at a word boundary (meta descriptions).
pub fn summary(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out = String::new();
    for word in text.split_whitespace() {
        if out.chars().count() + word.chars().count() + 2 > max {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.trim_end_matches([',', ';', ':', '.']).to_string() + "…"
}

pub fn credits(n: i64) -> String {
    if n == 1 { "1 credit".into() } else { format!("{n} credits") }
}

/// The side-by-side feature table (rows exactly as on the seed comparison).
pub struct FeatureTable {
    /// (slug, name) per column.
    pub models: Vec<(String, String)>,
    pub rows: Vec<FeatureRow>,
}

pub struct FeatureRow {
    pub label: &'static str,
    pub values: Vec<String>,
}

pub fn feature_table(models: &[&Model]) -> FeatureTable {
    let yes_no = |b: bool| if b { "Yes".to_string() } else { "No".to_string() };
    let row = |label: &'static str, f: &dyn Fn(&Model) -> String| FeatureRow {
        label,
        values: models.iter().map(|m| f(m)).collect(),
    };
    FeatureTable {
        models: models.iter().map(|m| (m.slug.clone(), m.name.clone())).collect(),
        rows: vec![
            row("Provider", &|m| m.provider_name.clone()),
            row("Subcategories", &|m| m.subcategories.join(", ")),
            row("1080p / 2k Mode", &|m| yes_no(m.offers(Mode::TwoK))),
            row("4k Mode", &|m| yes_no(m.offers(Mode::FourK))),
            row("NSFW Rating", &|m| m.nsfw_rating.clone()),
            row("Aspect Ratio", &|m| m.aspect_ratios.join(", ")),
            row("Model Variant", &|m| {
                if m.variants.len() > 1 {
                    m.variants.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", ")
                } else {
                    "—".to_string()
                }
            }),
            row("Starting Price", &|m| m.starting_price().map(|p| m.price_label(p)).unwrap_or_else(|| "—".into())),
        ],
    }
}

pub fn list_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {}", init.join(", "), last),
    }
}

pub fn generic_intro(a: &Model, b: &Model, use_case: Option<&UseCase>) -> String {
    let providers = if a.provider == b.provider {
        format!("two models from {}", a.provider_name)
    } else {
        format!("{} from {} and {} from {}", a.name, a.provider_name, b.name, b.provider_name)
    };
    match use_case {
        Some(uc) => format!(
            "{} and {} are {}. For {} work — {} — this page sets them side by side: the same showcase prompt run \
             through both, what each model accepts, the resolutions and aspect ratios it offers, and what an image \
             costs. {}",
            a.name,
            b.name,
            providers,
            uc.name.to_lowercase(),
            list_and(&uc.subcategories.iter().map(|s| s.to_lowercase()).collect::<Vec<_>>()),
            uc.description
        ),
        None => format!(
            "{} and {} are {}. Here are their facts side by side — inputs, resolution modes, aspect ratios, \
             variants and price per image — so you can tell which one fits before you spend a credit.",
            a.name, b.name, providers
        ),
    }
}

/// What `m` offers that `other` does not, from the catalog facts.
pub fn generic_strengths(m: &Model, other: &Model) -> Vec<String> {
    let mut points = Vec::new();
    if m.image_to_image && !other.image_to_image {
        points.push(format!("Accepts reference images (image-to-image); {} works from text only.", other.name));
    }
    if m.offers(Mode::FourK) && !other.offers(Mode::FourK) {
        points.push(format!("Offers a 4k mode (up to {} MP); {} stops at 1080p / 2k.", m.max_megapixels, other.name));
    }
    if let (Some(p), Some(q)) = (m.starting_price(), other.starting_price())
        && p < q
    {
        points.push(format!("Cheaper per image: from {} against {}.", m.price_label(p), other.price_label(q)));
    }
    let extra: Vec<String> = m.aspect_ratios.iter().filter(|r| !other.aspect_ratios.contains(r)).cloned().collect();
    if !extra.is_empty() {
        points.push(format!("More frame shapes: {} as well.", extra.join(", ")));
    }
    if m.variants.len() > 1 {
        points.push(format!(
            "{} variants ({}) to trade price against quality.",
            m.variants.len(),
            m.variants.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    if !m.capabilities.is_empty() {
        points.push(format!("{}.", m.capabilities.join(", ")));
    }
    if m.nsfw_rating == "Strict" && other.nsfw_rating != "Strict" {
        points.push("Strict content moderation, for publishing without a manual review step.".into());
    }
    points
}

pub fn generic_verdict(a: &Model, b: &Model, use_case: Option<&UseCase>) -> String {
    let mut parts = Vec::new();
    match (a.starting_price(), b.starting_price()) {
        (Some(p), Some(q)) if p != q => {
            let (cheap, cp, dear, dp) = if p < q { (a, p, b, q) } else { (b, q, a, p) };
            parts.push(format!(
                "On price, {} wins: {} per image against {} for {}.",
                cheap.name,
                cheap.price_label(cp),
                dear.price_label(dp),
                dear.name
            ));
        }
        (Some(p), Some(_)) => parts.push(format!("Both start at {} per image.", a.price_label(p))),
        _ => {}
    }
    for (m, other) in [(a, b), (b, a)] {
        let mut reasons = Vec::new();
        if m.image_to_image && !other.image_to_image {
            reasons.push("start from a reference image".to_string());
        }
        if m.offers(Mode::FourK) && !other.offers(Mode::FourK) {
            reasons.push("need 4k output".to_string());
        }
        if !reasons.is_empty() {
            parts.push(format!("Pick {} if you {}.", m.name, reasons.join(" or ")));
        }
    }
    parts.push(match use_case {
        Some(uc) => format!(
            "For {} the deciding factor is how each renders your own subject: run one prompt through both and compare.",
            uc.name.to_lowercase()
        ),
        None => "The best test is your own prompt: run it through both and compare the results side by side.".into(),
    });
    parts.join(" ")
}

pub fn generic_faq(a: &Model, b: &Model, use_case: Option<&UseCase>) -> Vec<Faq> {
    let mut faq = Vec::new();
    if let (Some(p), Some(q)) = (a.starting_price(), b.starting_price()) {
        faq.push(Faq {
            question: format!("How much does it cost to compare {} and {}?", a.name, b.name),
            answer: format!(
                "One prompt through both costs {}{} in the 1080p / 2k mode ({}: {}, {}: {}). Failed or blocked images \
                 are never charged, and new accounts start with free credits.",
                if a.is_usage_billed() || b.is_usage_billed() { "at most " } else { "" },
                credits(p + q),
                a.name,
                a.price_label(p),
                b.name,
                b.price_label(q)
            ),
        });
    }
    let four_k: Vec<String> = [a, b].iter().filter(|m| m.offers(Mode::FourK)).map(|m| m.name.clone()).collect();
    faq.push(Faq {
        question: "Which one can render in 4k?".into(),
        answer: match four_k.len() {
            0 => "Neither: both are offered in the 1080p / 2k mode only.".into(),
            2 if a.max_megapixels == b.max_megapixels => {
                format!("Both offer a 4k mode of up to {} megapixels.", a.max_megapixels)
            }
            2 => format!(
                "Both offer a 4k mode: {} up to {} megapixels, {} up to {}.",
                a.name, a.max_megapixels, b.name, b.max_megapixels
            ),
            _ => format!("Only {} offers a 4k mode; the other is offered in 1080p / 2k.", four_k.join("")),
        },
    });
    let i2i: Vec<String> = [a, b].iter().filter(|m| m.image_to_image).map(|m| m.name.clone()).collect();
    faq.push(Faq {
        question: "Can I start from my own reference image?".into(),
        answer: match i2i.len() {
            0 => "No, both generate from text only.".into(),
            2 => "Yes, both accept a reference image (image-to-image).".into(),
            _ => format!("Only {} accepts a reference image; the other generates from text only.", i2i.join("")),
        },
    });
    faq.push(Faq {
        question: "Which aspect ratios do they support?".into(),
        answer: format!("{}: {}. {}: {}.", a.name, a.aspect_ratios.join(", "), b.name, b.aspect_ratios.join(", ")),
    });
    if let Some(uc) = use_case {
        faq.push(Faq {
            question: format!("What prompt did you use for the {} showcase?", uc.name.to_lowercase()),
            answer: format!("“{}” — the same prompt, seed and size for both models.", uc.showcase_prompt),
        });
    }
    faq
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_table_matches_the_design() {
        let catalog = super::super::file::parse(super::super::CATALOG_TOML).expect("catalog");
        let (a, b) = (catalog.model("flux-2").expect("a"), catalog.model("flux-ultra-1-1").expect("b"));
        let table = feature_table(&[a, b]);
        let rows: Vec<(&str, Vec<&str>)> =
            table.rows.iter().map(|r| (r.label, r.values.iter().map(String::as_str).collect())).collect();
        assert_eq!(
            rows,
            vec![
                ("Provider", vec!["Black Forest Labs", "Black Forest Labs"]),
                ("Subcategories", vec!["text-to-image, image-to-image", "text-to-image"]),
                ("1080p / 2k Mode", vec!["Yes", "Yes"]),
                ("4k Mode", vec!["Yes", "No"]),
                ("NSFW Rating", vec!["Low", "Strict"]),
                ("Aspect Ratio", vec!["1:1, 16:9, 9:16, 3:4, 4:3", "1:1, 16:9, 9:16, 3:4, 4:3, 21:9"]),
                ("Model Variant", vec!["Standard, Klein 9B", "—"]),
                ("Starting Price", vec!["22 credits", "16 credits"]),
            ]
        );
    }

    #[test]
    fn summaries_cut_at_words() {
        assert_eq!(summary("short", 10), "short");
        let s = summary("one two three four five six", 12);
        assert!(s.chars().count() <= 12 && s.ends_with('…'), "{s}");
    }
}
