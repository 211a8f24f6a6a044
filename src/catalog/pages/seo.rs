//! What search engines and link previews read: title, description, canonical URL, preview
//! image and structured data (JSON-LD) of the catalog's pages.

use serde_json::json;

use crate::catalog::Faq;

// Shared pieces

/// What search engines and link previews read: title, description, canonical URL, preview
/// image and structured data.
pub struct Seo {
    pub title: String,
    pub description: String,
    /// Absolute.
    pub canonical: String,
    /// Absolute URL of a preview image.
    pub image: Option<String>,
    /// The preview image's width and height, when known (the social cards: 1200×630).
    pub image_size: Option<(u32, u32)>,
    pub og_type: &'static str,
    /// JSON-LD, already escaped for a `<script>` element.
    pub json_ld: Option<String>,
}

/// Serialises JSON-LD so it can sit inside `<script type="application/ld+json">`: `<`, `>` and
/// `&` become `\u003c`, `\u003e`, `\u0026` (still the same JSON), so no text can close the
/// element.
pub fn json_ld(value: &serde_json::Value) -> String {
    value.to_string().replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

pub fn breadcrumbs_ld(base: &str, crumbs: &[(String, String)]) -> serde_json::Value {
    json!({
        "@type": "BreadcrumbList",
        "itemListElement": crumbs.iter().enumerate().map(|(i, (name, href))| json!({
            "@type": "ListItem",
            "position": i + 1,
            "name": name,
            "item": format!("{base}{href}"),
        })).collect::<Vec<_>>(),
    })
}

pub fn faq_ld(faq: &[Faq]) -> serde_json::Value {
    json!({
        "@type": "FAQPage",
        "mainEntity": faq.iter().map(|f| json!({
            "@type": "Question",
            "name": f.question,
            "acceptedAnswer": { "@type": "Answer", "text": f.answer },
        })).collect::<Vec<_>>(),
    })
}

pub fn graph(items: Vec<serde_json::Value>) -> String {
    json_ld(&json!({ "@context": "https://schema.org", "@graph": items }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_ld_cannot_close_its_script_element() {
        let value = json!({ "text": "</script><script>alert(1)</script> & more" });
        let out = json_ld(&value);
        assert!(!out.contains("</script"), "{out}");
        assert!(!out.contains('<') && !out.contains('>') && !out.contains('&'));
        let back: serde_json::Value = serde_json::from_str(&out).expect("still JSON");
        assert_eq!(back, value);
    }
}
