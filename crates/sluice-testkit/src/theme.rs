//! The themes of the fake support conversations, and the keyword rules the
//! fake LLM uses to recognise them. Both fakes share this module, so a test
//! can predict the fake LLM's answer for every generated conversation.

use serde::{Deserialize, Serialize};

/// What a generated conversation is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Theme {
    /// Double charges, refunds, invoices, failed payments.
    Billing,
    /// Login, password resets, lock-outs, two-factor.
    AccountAccess,
    /// Crashes, errors, broken buttons.
    Bug,
    /// "It would be great if ...".
    FeatureRequest,
    /// Slow pages, time-outs, lag.
    Performance,
    /// Orders, deliveries, tracking numbers.
    Shipping,
}

impl Theme {
    /// Every theme, in a fixed order (also the tie-break order of the
    /// keyword classifier).
    pub const ALL: [Theme; 6] =
        [Theme::Billing, Theme::AccountAccess, Theme::Bug, Theme::FeatureRequest, Theme::Performance, Theme::Shipping];

    /// The default category name of the fake classifier for this theme.
    pub fn category(self) -> &'static str {
        match self {
            Theme::Billing => "billing",
            Theme::AccountAccess => "account_access",
            Theme::Bug => "bug",
            Theme::FeatureRequest => "feature_request",
            Theme::Performance => "performance",
            Theme::Shipping => "shipping",
        }
    }

    /// A human label, as the fake LLM names a theme.
    pub fn label(self) -> &'static str {
        match self {
            Theme::Billing => "Billing and refunds",
            Theme::AccountAccess => "Login and account access",
            Theme::Bug => "Crashes and errors",
            Theme::FeatureRequest => "Feature requests",
            Theme::Performance => "Slow performance",
            Theme::Shipping => "Shipping and delivery",
        }
    }

    /// Lower-case phrases whose presence in a text votes for this theme.
    pub fn keywords(self) -> &'static [&'static str] {
        match self {
            Theme::Billing => &["charged", "invoice", "refund", "billing", "payment", "subscription", "credit card"],
            Theme::AccountAccess => {
                &["log in", "login", "password", "sign in", "locked out", "two-factor", "2fa", "reset link"]
            }
            Theme::Bug => &["crash", "error", "bug", "freezes", "exception", "does nothing", "blank screen"],
            Theme::FeatureRequest => &[
                "would be great",
                "feature request",
                "would love",
                "suggestion",
                "please add",
                "add support",
                "dark mode",
            ],
            Theme::Performance => &["slow", "takes forever", "timing out", "timeout", "lag", "sluggish", "loading"],
            Theme::Shipping => {
                &["order", "tracking", "package", "delivered", "delivery", "shipping", "courier", "arrived"]
            }
        }
    }

    /// Words that, found in a category name, map that category to this
    /// theme (so a prompt's "Refunds" or "Login issues" category is picked
    /// for the matching conversations).
    pub fn category_synonyms(self) -> &'static [&'static str] {
        match self {
            Theme::Billing => &["billing", "refund", "payment", "invoice", "charge"],
            Theme::AccountAccess => &["account", "login", "log in", "access", "auth", "password", "sign"],
            Theme::Bug => &["bug", "crash", "error", "defect", "technical", "broken"],
            Theme::FeatureRequest => &["feature", "suggestion", "idea", "enhancement", "wish"],
            Theme::Performance => &["performance", "slow", "speed", "latency"],
            Theme::Shipping => &["shipping", "delivery", "order", "fulfil", "logistic"],
        }
    }

    /// The facet values the fake LLM answers for this theme.
    pub fn product_area(self) -> &'static str {
        match self {
            Theme::Billing => "billing",
            Theme::AccountAccess => "authentication",
            Theme::Bug => "core_app",
            Theme::FeatureRequest => "product",
            Theme::Performance => "infrastructure",
            Theme::Shipping => "fulfillment",
        }
    }

    /// The intent facet the fake LLM answers for this theme.
    pub fn intent(self) -> &'static str {
        match self {
            Theme::Billing => "request_refund",
            Theme::AccountAccess => "regain_access",
            Theme::Bug => "report_bug",
            Theme::FeatureRequest => "request_feature",
            Theme::Performance => "report_slowness",
            Theme::Shipping => "track_order",
        }
    }
}

/// The keyword verdict on a text: the best theme, how many keyword hits it
/// had, and the first keyword that matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeywordMatch {
    pub theme: Theme,
    pub hits: usize,
    pub keyword: &'static str,
}

/// Scores a text (HTML is stripped first) against every theme's keywords and
/// returns the theme with the most hits; ties go to the earlier theme in
/// [`Theme::ALL`]. `None` when nothing matches.
pub fn detect_theme(text: &str) -> Option<KeywordMatch> {
    let plain = strip_html(text).to_lowercase();
    let mut best: Option<KeywordMatch> = None;
    for theme in Theme::ALL {
        let mut hits = 0;
        let mut first: Option<&'static str> = None;
        for kw in theme.keywords() {
            let n = plain.matches(kw).count();
            if n > 0 {
                hits += n;
                first.get_or_insert(kw);
            }
        }
        if let Some(keyword) = first
            && best.as_ref().is_none_or(|b| hits > b.hits)
        {
            best = Some(KeywordMatch { theme, hits, keyword });
        }
    }
    best
}

/// Removes tags and decodes the few entities the fake data uses.
pub fn strip_html(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    let decoded = out
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ");
    decoded.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_themes_from_keywords() {
        let m = detect_theme("<p>I was charged twice, please refund me</p>").unwrap();
        assert_eq!(m.theme, Theme::Billing);
        assert_eq!(m.hits, 2);
        assert_eq!(detect_theme("I can't log in").unwrap().theme, Theme::AccountAccess);
        assert_eq!(detect_theme("hi"), None);
    }

    #[test]
    fn strips_html() {
        assert_eq!(strip_html("<p>Hi&nbsp;there</p><p>Bye &amp; thanks</p>"), "Hi there Bye & thanks");
        assert_eq!(strip_html(""), "");
    }
}
