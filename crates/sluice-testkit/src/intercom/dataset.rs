//! The fake Intercom workspace: a deterministic set of conversations.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::rng::Rng;
use crate::theme::{Theme, strip_html};

/// What to generate. The same spec always yields the same dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatasetSpec {
    /// How many conversations.
    pub conversations: usize,
    /// `updated_at` is spread uniformly over the `days` days before `now`.
    pub days: u32,
    /// The end of the data, in epoch seconds. Default 1_767_225_600
    /// (2026-01-01T00:00:00Z), fixed so tests are stable.
    pub now: i64,
    /// The seed of everything random.
    pub seed: u64,
    /// The fraction of conversations whose body is too short for a quality
    /// filter ("hi", "<p>ok</p>", an empty body): they have no theme.
    pub short_fraction: f64,
    /// The fraction of conversations that share their `updated_at` with
    /// another one (bulk updates happen), to exercise the id tie-break.
    pub tie_fraction: f64,
}

impl Default for DatasetSpec {
    fn default() -> Self {
        DatasetSpec {
            conversations: 500,
            days: 90,
            now: DEFAULT_NOW,
            seed: 7,
            short_fraction: 0.10,
            tie_fraction: 0.05,
        }
    }
}

/// 2026-01-01T00:00:00Z.
pub const DEFAULT_NOW: i64 = 1_767_225_600;

/// A person on a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Person {
    /// "user", "lead" or "admin".
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub name: String,
    pub email: String,
}

/// One conversation part (a reply, a note, a close).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Part {
    pub id: String,
    /// "comment", "note", "close", "assignment".
    pub part_type: String,
    /// HTML, or `None` (a close without a message).
    pub body: Option<String>,
    pub created_at: i64,
    pub author: Person,
}

/// One generated conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// Numeric string, unique, increasing with `created_at`.
    pub id: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// `None` for the too-short ones.
    pub theme: Option<Theme>,
    /// "open", "closed" or "snoozed".
    pub state: String,
    /// "priority" or "not_priority".
    pub priority: String,
    pub title: Option<String>,
    /// "conversation" (chat) or "email".
    pub source_type: String,
    pub subject: String,
    /// The first message, HTML.
    pub body: String,
    pub author: Person,
    pub contact_external_id: String,
    pub tags: Vec<String>,
    pub parts: Vec<Part>,
    pub read: bool,
    pub admin_assignee_id: Option<u64>,
}

impl Conversation {
    /// Whether the body is one of the deliberately too-short ones.
    pub fn is_short(&self) -> bool {
        self.theme.is_none()
    }

    /// The id as a number (the tie-break key).
    pub fn id_num(&self) -> u64 {
        self.id.parse().unwrap_or(0)
    }

    /// The first message as plain text.
    pub fn body_text(&self) -> String {
        strip_html(&self.body)
    }

    /// The conversation as Intercom API 2.11 JSON. Search results have no
    /// `conversation_parts`; `GET /conversations/{id}` has them.
    /// `plaintext` renders bodies as text, like `display_as=plaintext`.
    pub fn to_json(&self, with_parts: bool, plaintext: bool) -> Value {
        let render = |html: &str| -> Value {
            if plaintext { Value::String(strip_html(html)) } else { Value::String(html.to_string()) }
        };
        let admin_parts: Vec<&Part> = self.parts.iter().filter(|p| p.author.kind == "admin").collect();
        let first_admin_reply = admin_parts.iter().find(|p| p.part_type == "comment").map(|p| p.created_at);
        let close = self.parts.iter().rev().find(|p| p.part_type == "close");
        let last_contact_reply =
            self.parts.iter().rev().find(|p| p.author.kind != "admin").map(|p| p.created_at).unwrap_or(self.created_at);
        let assignment_at = self.admin_assignee_id.map(|_| self.created_at + 30);
        let tags: Vec<Value> = self
            .tags
            .iter()
            .map(|name| {
                json!({
                    "type": "tag",
                    "id": format!("{}", 5_000_000 + crate::rng::text_hash(name) % 1_000_000),
                    "name": name,
                    "applied_at": self.created_at,
                    "applied_by": {"type": "admin", "id": ADMIN_IDS[0]},
                })
            })
            .collect();
        let mut v = json!({
            "type": "conversation",
            "id": self.id,
            "title": self.title,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "waiting_since": if self.state == "open" { Some(last_contact_reply) } else { None },
            "snoozed_until": if self.state == "snoozed" { Some(self.updated_at + 86_400) } else { None },
            "open": self.state == "open",
            "state": self.state,
            "read": self.read,
            "priority": self.priority,
            "admin_assignee_id": self.admin_assignee_id,
            "team_assignee_id": self.admin_assignee_id.map(|_| "5017691"),
            "tags": {"type": "tag.list", "tags": tags},
            "conversation_rating": null,
            "source": {
                "type": self.source_type,
                "id": format!("{}", self.id_num() * 10 + 3),
                "delivered_as": "customer_initiated",
                "subject": self.subject,
                "body": render(&self.body),
                "author": {
                    "type": self.author.kind,
                    "id": self.author.id,
                    "name": self.author.name,
                    "email": self.author.email,
                },
                "attachments": [],
                "url": null,
                "redacted": false,
            },
            "contacts": {
                "type": "contact.list",
                "contacts": [{
                    "type": "contact",
                    "id": self.author.id,
                    "external_id": self.contact_external_id,
                }],
            },
            "teammates": {
                "type": "admin.list",
                "admins": admin_parts
                    .iter()
                    .map(|p| p.author.id.clone())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .map(|id| json!({"type": "admin", "id": id}))
                    .collect::<Vec<_>>(),
            },
            "custom_attributes": {},
            "first_contact_reply": {
                "created_at": self.created_at,
                "type": self.source_type,
                "url": null,
            },
            "sla_applied": null,
            "statistics": {
                "type": "conversation_statistics",
                "time_to_assignment": assignment_at.map(|a| a - self.created_at),
                "time_to_admin_reply": first_admin_reply.map(|r| r - self.created_at),
                "time_to_first_close": close.map(|c| c.created_at - self.created_at),
                "time_to_last_close": close.map(|c| c.created_at - self.created_at),
                "median_time_to_reply": first_admin_reply.map(|r| r - self.created_at),
                "first_contact_reply_at": self.created_at,
                "first_assignment_at": assignment_at,
                "first_admin_reply_at": first_admin_reply,
                "first_close_at": close.map(|c| c.created_at),
                "last_assignment_at": assignment_at,
                "last_assignment_admin_reply_at": first_admin_reply,
                "last_contact_reply_at": last_contact_reply,
                "last_admin_reply_at": admin_parts.iter().rev().find(|p| p.part_type == "comment").map(|p| p.created_at),
                "last_close_at": close.map(|c| c.created_at),
                "last_closed_by_id": close.map(|c| c.author.id.clone()),
                "count_reopens": 0,
                "count_assignments": if self.admin_assignee_id.is_some() { 1 } else { 0 },
                "count_conversation_parts": self.parts.len(),
            },
            "linked_objects": {"type": "list", "data": [], "total_count": 0, "has_more": false},
            "ai_agent_participated": false,
        });
        if with_parts {
            let parts: Vec<Value> = self
                .parts
                .iter()
                .map(|p| {
                    json!({
                        "type": "conversation_part",
                        "id": p.id,
                        "part_type": p.part_type,
                        "body": p.body.as_deref().map(&render),
                        "created_at": p.created_at,
                        "updated_at": p.created_at,
                        "notified_at": p.created_at,
                        "assigned_to": null,
                        "author": {
                            "type": p.author.kind,
                            "id": p.author.id,
                            "name": p.author.name,
                            "email": p.author.email,
                        },
                        "attachments": [],
                        "external_id": null,
                        "redacted": false,
                    })
                })
                .collect();
            v["conversation_parts"] = json!({
                "type": "conversation_part.list",
                "conversation_parts": parts,
                "total_count": self.parts.len(),
            });
        }
        v
    }
}

/// The whole workspace, sorted by (`updated_at`, id) ascending.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    conversations: Vec<Conversation>,
    index: HashMap<String, usize>,
}

impl Dataset {
    /// Generates the dataset of `spec`.
    pub fn generate(spec: &DatasetSpec) -> Dataset {
        Dataset::from_conversations(generate(spec))
    }

    /// A dataset of hand-made conversations (ids must be unique numeric
    /// strings).
    pub fn from_conversations(mut conversations: Vec<Conversation>) -> Dataset {
        conversations.sort_by_key(|c| (c.updated_at, c.id_num()));
        let index = conversations.iter().enumerate().map(|(i, c)| (c.id.clone(), i)).collect();
        Dataset { conversations, index }
    }

    pub fn len(&self) -> usize {
        self.conversations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conversations.is_empty()
    }

    /// Every conversation, by (`updated_at`, id) ascending.
    pub fn all(&self) -> &[Conversation] {
        &self.conversations
    }

    pub fn get(&self, id: &str) -> Option<&Conversation> {
        self.index.get(id).map(|&i| &self.conversations[i])
    }

    /// The theme of a conversation (`None`: unknown id or a short one).
    pub fn theme_of(&self, id: &str) -> Option<Theme> {
        self.get(id).and_then(|c| c.theme)
    }

    /// Ids with `from <= updated_at < to`, in (`updated_at`, id) order.
    pub fn ids_in_range(&self, from: i64, to: i64) -> Vec<String> {
        self.conversations.iter().filter(|c| c.updated_at >= from && c.updated_at < to).map(|c| c.id.clone()).collect()
    }

    /// Ids of the conversations too short for a quality filter.
    pub fn short_ids(&self) -> Vec<String> {
        self.conversations.iter().filter(|c| c.is_short()).map(|c| c.id.clone()).collect()
    }

    /// Sets a conversation's `updated_at` (as if someone replied to it during
    /// a backfill). Returns false for an unknown id.
    pub(crate) fn touch(&mut self, id: &str, updated_at: i64) -> bool {
        let Some(&i) = self.index.get(id) else {
            return false;
        };
        self.conversations[i].updated_at = updated_at;
        let all = std::mem::take(&mut self.conversations);
        *self = Dataset::from_conversations(all);
        true
    }
}

/// A change to the workspace while the fake runs (`POST /_testkit/conversations`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// The conversation to update; `None`: a new one (the next free id).
    #[serde(default)]
    pub id: Option<String>,
    pub updated_at: i64,
    /// Its new first message (HTML); a new conversation without one gets a
    /// copy of the first quality conversation's, with its id appended.
    #[serde(default)]
    pub body: Option<String>,
}

impl Dataset {
    /// Applies a change: updates a known conversation, or adds one modelled
    /// on the first quality conversation. Answers the id, or `None` for an
    /// unknown id (or a dataset without a quality conversation to copy).
    pub fn apply(&mut self, change: &Change) -> Option<String> {
        let mut all = std::mem::take(&mut self.conversations);
        let id = match &change.id {
            Some(id) => {
                let c = all.iter_mut().find(|c| &c.id == id);
                if let Some(c) = c {
                    c.updated_at = change.updated_at;
                    if let Some(body) = &change.body {
                        c.body = body.clone();
                    }
                    Some(id.clone())
                } else {
                    None
                }
            }
            None => {
                let next = all.iter().map(Conversation::id_num).max().unwrap_or(0) + 1;
                let template = all.iter().find(|c| !c.is_short()).cloned();
                template.map(|mut c| {
                    c.id = next.to_string();
                    c.body = change.body.clone().unwrap_or_else(|| format!("{} (conversation {next})", c.body));
                    c.created_at = change.updated_at;
                    c.updated_at = change.updated_at;
                    c.parts.clear();
                    all.push(c);
                    next.to_string()
                })
            }
        };
        *self = Dataset::from_conversations(all);
        id
    }
}

const ADMIN_IDS: [&str; 3] = ["991267001", "991267002", "991267003"];
const ADMIN_NAMES: [&str; 3] = ["Ciara Support", "Mateo Support", "Priya Support"];

const FIRST_NAMES: &[&str] = &[
    "Alice", "Bruno", "Chen", "Dana", "Emeka", "Fatima", "Gustav", "Hana", "Igor", "Jamal", "Keiko", "Luis", "Maya",
    "Noah", "Olga", "Pedro", "Quinn", "Rosa", "Sami", "Tara",
];
const LAST_NAMES: &[&str] = &[
    "Novak", "Okafor", "Silva", "Tanaka", "Schmidt", "Haddad", "Kowalski", "Moreau", "Rossi", "Jensen", "Patel",
    "Garcia", "Kim", "Nguyen", "Brown",
];

const GREETINGS: &[&str] = &["Hi there,", "Hello,", "Hey team,", "Good morning,", "Hi,", ""];
const CLOSINGS: &[&str] = &["Thanks in advance.", "Can you help?", "Please advise.", "This is urgent for us.", ""];

const SHORT_BODIES: &[&str] =
    &["", "hi", "<p>hi</p>", "<p>ok</p>", "<p>?</p>", "<p>thanks</p>", "<p>hello?</p>", "test"];

fn problems(theme: Theme) -> &'static [&'static str] {
    match theme {
        Theme::Billing => &[
            "I was charged twice for my invoice this month.",
            "I need a refund for the annual plan I cancelled yesterday.",
            "My credit card payment failed but the subscription still shows as active.",
            "The invoice lists the wrong VAT number and amount.",
            "Why did my billing amount go up without notice?",
        ],
        Theme::AccountAccess => &[
            "I can't log in to my account since this morning.",
            "The password reset email never arrives.",
            "I'm locked out after too many sign in attempts.",
            "Two-factor codes from my authenticator are rejected at login.",
            "After changing my email address I can no longer sign in.",
        ],
        Theme::Bug => &[
            "The app crashes every time I open the reports page.",
            "Exporting to CSV throws an error and the file is empty.",
            "I found a bug: the save button does nothing on the settings page.",
            "The mobile app freezes and then closes when I upload a photo.",
            "The dashboard shows a blank screen with an exception in the console.",
        ],
        Theme::FeatureRequest => &[
            "It would be great if we could schedule reports to be emailed weekly.",
            "Feature request: please add a dark mode to the editor.",
            "Would love to see an integration with Google Sheets.",
            "Suggestion: let admins bulk-edit user roles.",
            "Could you add support for exporting data as Excel files?",
        ],
        Theme::Performance => &[
            "The dashboard is extremely slow this week.",
            "Search takes forever, sometimes over 30 seconds.",
            "Pages keep timing out when we open large projects.",
            "There is a lot of lag when typing in the editor.",
            "Everything has been sluggish since Monday, with loading spinners everywhere.",
        ],
        Theme::Shipping => &[
            "My order still hasn't arrived and the tracking number shows no updates.",
            "The package was delivered to the wrong address.",
            "Shipping has been stuck at the courier for ten days.",
            "Can you tell me when my delivery will arrive?",
            "The box arrived damaged and half the items are missing.",
        ],
    }
}

fn details(theme: Theme) -> &'static [&'static str] {
    match theme {
        Theme::Billing => &[
            "The duplicate charge is on the card ending in 4242.",
            "Please refund the difference to the original payment method.",
            "Our finance team needs a corrected invoice.",
            "I have attached the bank statement showing both payments.",
        ],
        Theme::AccountAccess => &[
            "I tried the reset link three times.",
            "My username is the same as my work address.",
            "Clearing cookies and trying another browser did not let me log in.",
            "My teammates can sign in without any trouble.",
        ],
        Theme::Bug => &[
            "It started after the latest update.",
            "Steps to reproduce: open the page, click export, wait a few seconds.",
            "The error message says 'unexpected token'.",
            "It happens on both Chrome and Firefox.",
        ],
        Theme::FeatureRequest => &[
            "Our whole team would use this every day.",
            "Competitors already offer something similar.",
            "Happy to give feedback on an early version.",
            "This would save us hours each month.",
        ],
        Theme::Performance => &[
            "Our internet connection is fine, other sites are fast.",
            "It is worst during business hours in Europe.",
            "We have about 20,000 records in the account.",
            "It used to be much faster a month ago.",
        ],
        Theme::Shipping => &[
            "The tracking page only says 'label created'.",
            "I paid for express shipping.",
            "The order number is #48213.",
            "I need it before the weekend.",
        ],
    }
}

fn subjects(theme: Theme) -> &'static [&'static str] {
    match theme {
        Theme::Billing => &["Double charge", "Refund request", "Invoice question"],
        Theme::AccountAccess => &["Can't log in", "Password reset", "Locked out"],
        Theme::Bug => &["App crash", "Export error", "Something is broken"],
        Theme::FeatureRequest => &["Feature request", "Suggestion", "Idea for the product"],
        Theme::Performance => &["Very slow", "Timeouts", "Performance problem"],
        Theme::Shipping => &["Where is my order?", "Delivery problem", "Tracking number"],
    }
}

fn theme_reply(theme: Theme) -> &'static str {
    match theme {
        Theme::Billing => "I've issued a refund for the duplicate charge; it should appear within 5-10 business days.",
        Theme::AccountAccess => "I've sent you a new password reset link, it is valid for one hour.",
        Theme::Bug => "Thanks for the report, our engineers reproduced the crash and are working on a fix.",
        Theme::FeatureRequest => "Thanks for the suggestion! I've shared it with our product team.",
        Theme::Performance => "We identified a slow database query and deployed a fix, it should be faster now.",
        Theme::Shipping => "I checked with the courier: your package is on its way and the tracking will update soon.",
    }
}

const GENERIC_REPLIES: &[&str] = &[
    "Thanks for reaching out! I'm looking into this now.",
    "I've passed this on to the right team and will update you shortly.",
    "Could you share a screenshot so we can take a closer look?",
];
const FOLLOW_UPS: &[&str] =
    &["Thanks, any news on this?", "Great, that worked. Thank you!", "Here is the screenshot you asked for."];

fn person(rng: &mut Rng, kind: &str, n: usize) -> Person {
    let first = *rng.pick(FIRST_NAMES);
    let last = *rng.pick(LAST_NAMES);
    let id = format!("{:016x}{:08x}", rng.next_u64(), n as u32);
    Person {
        kind: kind.to_string(),
        id,
        name: format!("{first} {last}"),
        email: format!("{}.{}{}@example.com", first.to_lowercase(), last.to_lowercase(), n),
    }
}

fn admin(i: usize) -> Person {
    let i = i % ADMIN_IDS.len();
    Person {
        kind: "admin".to_string(),
        id: ADMIN_IDS[i].to_string(),
        name: ADMIN_NAMES[i].to_string(),
        email: format!("{}@support.example.com", ADMIN_NAMES[i].split(' ').next().unwrap_or("admin").to_lowercase()),
    }
}

fn paragraph(text: &str) -> String {
    if text.is_empty() { String::new() } else { format!("<p>{text}</p>") }
}

fn generate(spec: &DatasetSpec) -> Vec<Conversation> {
    let mut rng = Rng::new(spec.seed);
    let end = spec.now;
    let start = end - spec.days as i64 * 86_400;
    let n = spec.conversations;

    // Times first: updated_at uniform in [start, end], some ties.
    let mut times: Vec<(i64, i64)> = Vec::with_capacity(n);
    for i in 0..n {
        let mut updated = rng.range(start, end);
        if i > 0 && rng.chance(spec.tie_fraction) {
            let other = times[rng.below(i as u64) as usize].1;
            updated = other;
        }
        let age = rng.range(0, 3 * 86_400);
        times.push((updated - age, updated));
    }
    // Ids increase with created_at, like Intercom's.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (times[i].0, i));
    let mut ids = vec![0u64; n];
    for (rank, &i) in order.iter().enumerate() {
        ids[i] = 1_000_000_000 + rank as u64 * 7 + rng.below(7);
    }

    (0..n)
        .map(|i| {
            let (created_at, updated_at) = times[i];
            let id = ids[i].to_string();
            let short = rng.chance(spec.short_fraction);
            let theme = if short { None } else { Some(*rng.pick(&Theme::ALL)) };
            let source_type = if rng.chance(0.3) { "email" } else { "conversation" };
            let kind = if rng.chance(0.8) { "user" } else { "lead" };
            let author = person(&mut rng, kind, i);
            let (body, subject, title) = match theme {
                None => (rng.pick(SHORT_BODIES).to_string(), String::new(), None),
                Some(t) => {
                    let mut html = String::new();
                    html.push_str(&paragraph(rng.pick_str(GREETINGS)));
                    html.push_str(&paragraph(rng.pick_str(problems(t))));
                    html.push_str(&paragraph(rng.pick_str(details(t))));
                    html.push_str(&paragraph(rng.pick_str(CLOSINGS)));
                    let subj = rng.pick(subjects(t)).to_string();
                    let title = if rng.chance(0.3) { Some(subj.clone()) } else { None };
                    (html, if source_type == "email" { subj } else { String::new() }, title)
                }
            };
            let state = match rng.below(10) {
                0..=5 => "closed",
                6..=8 => "open",
                _ => "snoozed",
            };
            let mut parts = Vec::new();
            if let Some(t) = theme {
                let span = updated_at - created_at;
                let at = |k: i64| created_at + span * k / 5;
                let admin_i = rng.below(3) as usize;
                let mut pid = ids[i] * 100;
                let mut push = |part_type: &str, body: Option<String>, created: i64, author: Person| {
                    pid += 1;
                    parts.push(Part {
                        id: pid.to_string(),
                        part_type: part_type.to_string(),
                        body,
                        created_at: created,
                        author,
                    });
                };
                push("comment", Some(paragraph(rng.pick_str(GENERIC_REPLIES))), at(1), admin(admin_i));
                if rng.chance(0.6) {
                    push("comment", Some(paragraph(rng.pick_str(FOLLOW_UPS))), at(2), author.clone());
                }
                if rng.chance(0.7) {
                    push("comment", Some(paragraph(theme_reply(t))), at(3), admin(admin_i));
                }
                if state == "closed" {
                    push("close", None, at(5), admin(admin_i));
                }
            }
            let mut tags = Vec::new();
            if let Some(t) = theme
                && rng.chance(0.25)
            {
                tags.push(t.category().to_string());
            }
            if rng.chance(0.1) {
                tags.push("vip".to_string());
            }
            let priority = if rng.chance(0.1) { "priority" } else { "not_priority" };
            let assignee =
                if rng.chance(0.8) { Some(ADMIN_IDS[rng.below(3) as usize].parse().unwrap_or(0)) } else { None };
            Conversation {
                id,
                created_at,
                updated_at,
                theme,
                state: state.to_string(),
                priority: priority.to_string(),
                title,
                source_type: source_type.to_string(),
                subject,
                body,
                contact_external_id: format!("ext-{}", 70_000 + i),
                author,
                tags,
                parts,
                read: rng.chance(0.7),
                admin_assignee_id: assignee,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::theme::detect_theme;

    fn spec(n: usize) -> DatasetSpec {
        DatasetSpec { conversations: n, ..DatasetSpec::default() }
    }

    #[test]
    fn generation_is_deterministic() {
        let a = Dataset::generate(&spec(200));
        let b = Dataset::generate(&spec(200));
        assert_eq!(a.all(), b.all());
        let c = Dataset::generate(&DatasetSpec { seed: 8, ..spec(200) });
        assert_ne!(a.all(), c.all());
    }

    #[test]
    fn shape_of_the_data() {
        let s = spec(2000);
        let d = Dataset::generate(&s);
        assert_eq!(d.len(), 2000);
        let start = s.now - s.days as i64 * 86_400;
        let mut ids = std::collections::HashSet::new();
        for c in d.all() {
            assert!(c.updated_at >= start && c.updated_at <= s.now, "{}", c.updated_at);
            assert!(c.created_at <= c.updated_at);
            assert!(ids.insert(c.id.clone()), "duplicate id {}", c.id);
            assert!(c.parts.iter().all(|p| p.created_at >= c.created_at && p.created_at <= c.updated_at));
        }
        // Sorted with a tie-break on id, and ties exist.
        assert!(d.all().windows(2).all(|w| (w[0].updated_at, w[0].id_num()) < (w[1].updated_at, w[1].id_num())));
        assert!(d.all().windows(2).any(|w| w[0].updated_at == w[1].updated_at));
        // About 10% short.
        let short = d.short_ids().len();
        assert!((120..=280).contains(&short), "{short} short");
        // Every theme is present.
        for t in Theme::ALL {
            assert!(d.all().iter().any(|c| c.theme == Some(t)));
        }
    }

    #[test]
    fn every_body_is_recognised_as_its_theme() {
        let d = Dataset::generate(&DatasetSpec { seed: 3, ..spec(3000) });
        for c in d.all() {
            let mut full = c.body.clone();
            for p in &c.parts {
                if let Some(b) = &p.body {
                    full.push_str(b);
                }
            }
            match c.theme {
                Some(t) => {
                    assert_eq!(detect_theme(&c.body).map(|m| m.theme), Some(t), "body {:?}", c.body);
                    assert_eq!(detect_theme(&full).map(|m| m.theme), Some(t), "thread {full:?}");
                    assert!(c.body_text().len() >= 30, "{:?}", c.body);
                }
                None => {
                    assert!(c.body_text().len() <= 8, "{:?}", c.body);
                    assert!(c.parts.is_empty());
                }
            }
        }
    }

    #[test]
    fn json_shapes() {
        let d = Dataset::generate(&spec(50));
        let c = d.all().iter().find(|c| !c.is_short() && !c.parts.is_empty()).unwrap();
        let listed = c.to_json(false, false);
        assert_eq!(listed["type"], "conversation");
        assert_eq!(listed["id"], c.id.as_str());
        assert!(listed.get("conversation_parts").is_none());
        assert!(listed["source"]["body"].as_str().unwrap().starts_with("<p>"));
        let full = c.to_json(true, true);
        assert_eq!(full["conversation_parts"]["type"], "conversation_part.list");
        assert_eq!(full["conversation_parts"]["total_count"], c.parts.len());
        assert!(!full["source"]["body"].as_str().unwrap().contains('<'));
        assert_eq!(d.theme_of(&c.id), c.theme);
        assert_eq!(d.get(&c.id).unwrap().id, c.id);
    }

    #[test]
    fn touch_moves_a_conversation() {
        let mut d = Dataset::generate(&spec(20));
        let first = d.all()[0].id.clone();
        assert!(d.touch(&first, DEFAULT_NOW + 5));
        assert_eq!(d.all().last().unwrap().id, first);
        assert_eq!(d.get(&first).unwrap().updated_at, DEFAULT_NOW + 5);
        assert!(!d.touch("nope", 1));
    }
}
