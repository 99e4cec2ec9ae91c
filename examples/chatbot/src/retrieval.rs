//! Knowledge base and retrieval engine of the chatbot example.
//!
//! This module has no dependencies beyond `std`. It turns a directory of
//! Markdown support articles into an [`Index`] ranked with Okapi BM25, and
//! composes short answers from the best-matching sentences:
//!
//! - [`Article::parse`] reads one article: a `# Title` line followed by a body.
//! - [`load_dir`] reads every `*.md` file of a directory; [`builtin`] returns the
//!   articles compiled into the binary from `examples/chatbot/knowledge/`.
//! - [`tokenize`] is the analyser shared by documents and queries: Unicode-aware
//!   lowercasing, splitting on anything that is not alphanumeric (camelCase
//!   words also yield their parts), a small English stop-word list and light
//!   suffix stemming.
//! - [`Index::build`] computes Okapi BM25 statistics (`k1 = 1.2`, `b = 0.75`,
//!   `idf = ln(1 + (N - df + 0.5) / (df + 0.5))`), with title terms counted
//!   three times.
//! - [`Index::search`] ranks articles; [`Index::answer`] picks the best sentences
//!   of the top articles and cites them as [`Source`]s.
//!
//! ```ignore
//! let index = retrieval::Index::build(retrieval::builtin());
//! let answer = index.answer("How long should terminationGracePeriodSeconds be?", 3);
//! println!("{}", answer.text);
//! for source in &answer.sources {
//!     println!("  {} ({:.2})", source.title, source.score);
//! }
//! ```

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::path::Path;

/// BM25 term-frequency saturation parameter.
const K1: f64 = 1.2;
/// BM25 document-length normalisation parameter.
const B: f64 = 0.75;
/// How many times a title term counts compared with a body term.
const TITLE_WEIGHT: f64 = 3.0;
/// Smallest share of the question's total idf weight that the best article must
/// cover before an answer is attempted; below it the question is off-topic.
const MIN_COVERAGE: f64 = 0.2;
/// Most sentences in an answer.
const MAX_SENTENCES: usize = 4;
/// Soft limit on the length of an answer, in bytes.
const MAX_ANSWER_LEN: usize = 600;
/// Sentences scoring below this share of the best sentence are not used.
const SENTENCE_SCORE_RATIO: f64 = 0.5;
/// The sentence an answer is anchored on comes from an article scoring at
/// least this share of the best article.
const ANCHOR_ARTICLE_RATIO: f64 = 0.9;
/// Sentences of other articles must score at least this share of the best one.
const OTHER_ARTICLE_SCORE_RATIO: f64 = 0.9;
/// Sentences shorter than this many words are fragments, not answers.
const MIN_SENTENCE_WORDS: usize = 4;

/// The answer given when nothing in the knowledge base matches a question.
pub(crate) const NOT_FOUND_ANSWER: &str = concat!(
    "I could not find anything about that in the knowledge base. ",
    "Try rephrasing the question, or ask about probes, graceful shutdown, ",
    "rollouts, canary releases or metrics."
);

/// English words too common to help ranking. Matched after lowercasing and
/// before stemming; kept sorted for binary search.
const STOP_WORDS: &[&str] = &[
    "a", "about", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be", "been",
    "being", "but", "by", "can", "could", "did", "do", "does", "doing", "during", "for", "from",
    "had", "has", "have", "how", "i", "if", "in", "into", "is", "it", "its", "just", "like", "me",
    "my", "no", "not", "of", "on", "or", "our", "please", "should", "so", "some", "than", "that",
    "the", "their", "them", "then", "there", "these", "they", "this", "those", "to", "us", "very",
    "was", "we", "were", "what", "when", "where", "which", "while", "who", "why", "will", "with",
    "work", "working", "works", "would", "you", "your",
];

/// One support article of the knowledge base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Article {
    /// Stable identifier, the file name without `.md` (for example `exit-codes`).
    pub(crate) slug: String,
    /// The title, taken from the `# Title` line.
    pub(crate) title: String,
    /// The Markdown body after the title line, trimmed.
    pub(crate) body: String,
}

impl Article {
    /// Parses an article from Markdown text.
    ///
    /// The first non-blank line must be a level-one heading (`# Title`) and
    /// some text must follow it.
    ///
    /// # Errors
    ///
    /// Returns a message saying what is missing when the slug is empty, the
    /// text does not start with a `# ` title, the title is empty or the body is
    /// empty.
    pub(crate) fn parse(slug: &str, text: &str) -> Result<Article, String> {
        let slug = slug.trim();
        if slug.is_empty() {
            return Err("the article has an empty slug".to_owned());
        }
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let text = text.trim_start();
        let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
        let heading = first.trim_end();
        if heading == "#" {
            return Err(format!("article `{slug}` has an empty title"));
        }
        let title = heading
            .strip_prefix("# ")
            .ok_or_else(|| format!("article `{slug}` must start with a `# Title` line"))?
            .trim();
        if title.is_empty() {
            return Err(format!("article `{slug}` has an empty title"));
        }
        let body = rest.trim();
        if body.is_empty() {
            return Err(format!("article `{slug}` has an empty body"));
        }
        Ok(Article {
            slug: slug.to_owned(),
            title: title.to_owned(),
            body: body.replace("\r\n", "\n"),
        })
    }
}

/// One ranked article returned by [`Index::search`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hit {
    /// Position of the article in [`Index::articles`].
    pub(crate) index: usize,
    /// The article's slug.
    pub(crate) slug: String,
    /// The article's title.
    pub(crate) title: String,
    /// BM25 score; always greater than zero.
    pub(crate) score: f64,
}

/// An article cited by an [`Answer`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Source {
    /// The article's slug.
    pub(crate) slug: String,
    /// The article's title.
    pub(crate) title: String,
    /// BM25 score of the article for the question.
    pub(crate) score: f64,
}

/// A composed answer and the articles it was taken from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    /// Two to four sentences from the knowledge base, or [`NOT_FOUND_ANSWER`].
    pub(crate) text: String,
    /// The cited articles, best first; empty when nothing matched.
    pub(crate) sources: Vec<Source>,
}

impl Answer {
    /// Whether the knowledge base had something to say (at least one source).
    #[must_use]
    pub(crate) fn found(&self) -> bool {
        !self.sources.is_empty()
    }
}

/// A sentence of an article body, ready to be quoted in an answer.
#[derive(Debug, Clone)]
struct Passage {
    /// Plain text, Markdown markup removed, ending with punctuation.
    text: String,
    /// Distinct analysed terms of the sentence (plus its list label, if any).
    terms: BTreeSet<String>,
    /// Ends with a colon that introduced something not quoted (a list, a long
    /// code block): unusable on its own.
    dangling: bool,
    /// A bold lead-in (`**Finalizers.**`) that heads the sentences after it.
    label: bool,
    /// Number of the paragraph, list item or table row it comes from.
    block: usize,
}

/// A sentence of a hit article with its relevance to a question.
#[derive(Debug, Clone, Copy)]
struct Scored {
    score: f64,
    /// Rank of the article among the hits.
    rank: usize,
    /// Position of the sentence in the article.
    pos: usize,
}

/// A BM25 index over a set of articles.
#[derive(Clone)]
pub(crate) struct Index {
    articles: Vec<Article>,
    /// Weighted length of each document (title terms count [`TITLE_WEIGHT`] times).
    doc_lens: Vec<f64>,
    avg_len: f64,
    /// Term -> (document, weighted term frequency), documents ascending.
    postings: HashMap<String, Vec<(usize, f64)>>,
    /// Sentences of each article, in order.
    passages: Vec<Vec<Passage>>,
}

impl fmt::Debug for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Index")
            .field("articles", &self.articles.len())
            .field("terms", &self.postings.len())
            .field("avg_len", &self.avg_len)
            .finish_non_exhaustive()
    }
}

impl Index {
    /// Builds the index: analyses every title and body, and splits bodies into
    /// sentences for [`Index::answer`].
    #[must_use]
    pub(crate) fn build(articles: Vec<Article>) -> Index {
        let mut postings: HashMap<String, Vec<(usize, f64)>> = HashMap::new();
        let mut doc_lens = Vec::with_capacity(articles.len());
        let mut passages = Vec::with_capacity(articles.len());
        for (doc, article) in articles.iter().enumerate() {
            let mut freqs: HashMap<String, f64> = HashMap::new();
            let mut len = 0.0;
            for term in tokenize(&article.title) {
                *freqs.entry(term).or_insert(0.0) += TITLE_WEIGHT;
                len += TITLE_WEIGHT;
            }
            for term in tokenize(&article.body) {
                *freqs.entry(term).or_insert(0.0) += 1.0;
                len += 1.0;
            }
            for (term, tf) in freqs {
                postings.entry(term).or_default().push((doc, tf));
            }
            doc_lens.push(len);
            passages.push(split_passages(&article.body));
        }
        for list in postings.values_mut() {
            list.sort_by_key(|&(doc, _)| doc);
        }
        let avg_len = if doc_lens.is_empty() {
            0.0
        } else {
            doc_lens.iter().sum::<f64>() / as_f64(doc_lens.len())
        };
        Index {
            articles,
            doc_lens,
            avg_len,
            postings,
            passages,
        }
    }

    /// The indexed articles, in the order given to [`Index::build`] (for tests).
    #[cfg(test)]
    #[must_use]
    pub(crate) fn articles(&self) -> &[Article] {
        &self.articles
    }

    /// Number of indexed articles.
    #[must_use]
    pub(crate) fn len(&self) -> usize {
        self.articles.len()
    }

    /// Whether the index holds no article.
    #[must_use]
    pub(crate) fn is_empty(&self) -> bool {
        self.articles.is_empty()
    }

    /// Ranks the articles for `query` and returns at most `k` of them, best
    /// first. Articles that share no term with the query are left out; equal
    /// scores are ordered by slug so results are deterministic.
    #[must_use]
    pub(crate) fn search(&self, query: &str, k: usize) -> Vec<Hit> {
        if k == 0 || self.is_empty() {
            return Vec::new();
        }
        let terms = query_terms(query);
        let scores = self.score_all(&terms);
        let mut hits: Vec<Hit> = scores
            .iter()
            .enumerate()
            .filter(|&(_, &score)| score > 0.0)
            .map(|(index, &score)| Hit {
                index,
                slug: self.articles[index].slug.clone(),
                title: self.articles[index].title.clone(),
                score,
            })
            .collect();
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.slug.cmp(&b.slug))
        });
        hits.truncate(k);
        hits
    }

    /// Answers `question` with two to four sentences taken from the best
    /// matching articles, citing at most `max_sources` of them (at least one).
    ///
    /// The answer is anchored on the sentence of a top article that covers
    /// the most of the question (by idf weight), continued with the next
    /// sentence of the same paragraph, and completed with other strong
    /// sentences of the top articles. When the question has no meaningful
    /// overlap with the knowledge base the answer is [`NOT_FOUND_ANSWER`] with
    /// no sources.
    #[must_use]
    pub(crate) fn answer(&self, question: &str, max_sources: usize) -> Answer {
        let terms = query_terms(question);
        let hits = self.search(question, max_sources.max(1));
        let Some(top) = hits.first() else {
            return not_found();
        };
        if self.coverage(&terms, top.index) < MIN_COVERAGE {
            return not_found();
        }
        let weights: Vec<(&str, f64)> = terms
            .iter()
            .map(|term| (term.as_str(), self.idf_of(term)))
            .collect();
        let scored = self.score_sentences(&hits, &weights);
        let picked = self.pick_sentences(&hits, &weights, &scored);
        if picked.is_empty() {
            return not_found();
        }

        let text = picked
            .iter()
            .map(|&(rank, pos)| self.passages[hits[rank].index][pos].text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let mut used: Vec<usize> = picked.iter().map(|&(rank, _)| rank).collect();
        used.dedup();
        let sources = used
            .into_iter()
            .map(|rank| Source {
                slug: hits[rank].slug.clone(),
                title: hits[rank].title.clone(),
                score: hits[rank].score,
            })
            .collect();
        Answer { text, sources }
    }

    /// Scores every usable sentence of the hit articles against the weighted
    /// query terms, best first.
    fn score_sentences(&self, hits: &[Hit], weights: &[(&str, f64)]) -> Vec<Scored> {
        let total: f64 = weights.iter().map(|&(_, weight)| weight).sum();
        let top_score = hits.first().map_or(1.0, |hit| hit.score);
        let mut scored = Vec::new();
        for (rank, hit) in hits.iter().enumerate() {
            let article_factor = hit.score / top_score;
            for (pos, passage) in self.passages[hit.index].iter().enumerate() {
                if passage.dangling {
                    continue;
                }
                let matched: f64 = weights
                    .iter()
                    .filter(|(term, _)| passage.terms.contains(*term))
                    .map(|&(_, weight)| weight)
                    .sum();
                if matched > 0.0 {
                    // Reward sentences that cover more of the question.
                    let score = matched * (0.5 + 0.5 * matched / total) * article_factor;
                    scored.push(Scored { score, rank, pos });
                }
            }
        }
        scored.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.rank.cmp(&b.rank))
                .then_with(|| a.pos.cmp(&b.pos))
        });
        scored
    }

    /// Chooses the sentences of an answer as `(rank of the article in hits,
    /// position of the sentence)`, in reading order.
    fn pick_sentences(
        &self,
        hits: &[Hit],
        weights: &[(&str, f64)],
        scored: &[Scored],
    ) -> Vec<(usize, usize)> {
        let passage = |(rank, pos): (usize, usize)| &self.passages[hits[rank].index][pos];
        let top_score = hits.first().map_or(0.0, |hit| hit.score);
        // The answer is anchored on the best sentence of an article that ranks
        // close to the top.
        let Some(anchor) = scored
            .iter()
            .find(|s| hits[s.rank].score >= top_score * ANCHOR_ARTICLE_RATIO)
        else {
            return Vec::new();
        };
        let (rank, best_pos) = (anchor.rank, anchor.pos);
        let article = &self.passages[hits[rank].index];
        let best = &article[best_pos];

        let mut picked = vec![(rank, best_pos)];
        let mut length = best.text.len();
        // A sentence opening with "So", "This", "It"... needs the one before
        // it, and a sentence under a bold lead-in needs its lead-in.
        if let Some(previous) = best_pos.checked_sub(1).map(|pos| &article[pos]) {
            let same_block = previous.block == best.block && !previous.dangling;
            if same_block && (previous.label || refers_back(&best.text)) {
                picked.push((rank, best_pos - 1));
                length += previous.text.len() + 1;
            }
        }
        // The next sentence of the same paragraph usually carries the answer on.
        let next = article.get(best_pos + 1);
        if let Some(next) = next.filter(|next| next.block == best.block && !next.dangling) {
            picked.push((rank, best_pos + 1));
            length += next.text.len() + 1;
        }
        for candidate in scored {
            if picked.len() >= MAX_SENTENCES
                || candidate.score < anchor.score * SENTENCE_SCORE_RATIO
            {
                break;
            }
            let key = (candidate.rank, candidate.pos);
            let text = passage(key);
            if picked.contains(&key) || length + text.text.len() > MAX_ANSWER_LEN {
                continue;
            }
            if candidate.rank != rank {
                // Another article must be strong and add something new.
                let covered = |term: &str| picked.iter().any(|&p| passage(p).terms.contains(term));
                let adds = weights
                    .iter()
                    .any(|(term, _)| text.terms.contains(*term) && !covered(term));
                if !adds || candidate.score < anchor.score * OTHER_ARTICLE_SCORE_RATIO {
                    continue;
                }
            }
            if !picked
                .iter()
                .any(|&p| similar(&text.terms, &passage(p).terms))
            {
                length += text.text.len() + 1;
                picked.push(key);
            }
        }
        if picked.len() < 2 {
            // Add the sentence that follows the best one, for context.
            let next = (best_pos + 1..article.len()).find(|&pos| !article[pos].dangling);
            if let Some(pos) = next {
                picked.push((rank, pos));
            }
        }
        picked.sort_unstable();
        picked
    }

    /// BM25 score of every document for the (distinct) query terms.
    fn score_all(&self, terms: &[String]) -> Vec<f64> {
        let mut scores = vec![0.0; self.articles.len()];
        if self.avg_len <= 0.0 {
            return scores;
        }
        for term in terms {
            let Some(list) = self.postings.get(term) else {
                continue;
            };
            let idf = self.idf(list.len());
            for &(doc, tf) in list {
                let norm = K1 * (1.0 - B + B * self.doc_lens[doc] / self.avg_len);
                scores[doc] += idf * tf * (K1 + 1.0) / (tf + norm);
            }
        }
        scores
    }

    /// Okapi BM25 inverse document frequency for a term found in `df` articles.
    fn idf(&self, df: usize) -> f64 {
        let n = as_f64(self.articles.len());
        let df = as_f64(df);
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }

    /// Inverse document frequency of an analysed term (unknown terms get the
    /// largest value, as if found in no article).
    fn idf_of(&self, term: &str) -> f64 {
        self.idf(self.postings.get(term).map_or(0, Vec::len))
    }

    /// Share of the query's total idf weight carried by terms present in `doc`.
    fn coverage(&self, terms: &[String], doc: usize) -> f64 {
        let mut total = 0.0;
        let mut matched = 0.0;
        for term in terms {
            let idf = self.idf_of(term);
            total += idf;
            let present = self
                .postings
                .get(term)
                .is_some_and(|list| list.binary_search_by_key(&doc, |&(d, _)| d).is_ok());
            if present {
                matched += idf;
            }
        }
        if total <= 0.0 {
            return 0.0;
        }
        matched / total
    }
}

/// A count as a float; knowledge bases are far below 2^52 articles or terms.
#[allow(clippy::cast_precision_loss)]
fn as_f64(count: usize) -> f64 {
    count as f64
}

fn not_found() -> Answer {
    Answer {
        text: NOT_FOUND_ANSWER.to_owned(),
        sources: Vec::new(),
    }
}

/// Distinct query terms in order of first appearance.
fn query_terms(query: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    tokenize(query)
        .into_iter()
        .filter(|term| seen.insert(term.clone()))
        .collect()
}

/// Whether a sentence opens with a word that points back at the previous one.
fn refers_back(sentence: &str) -> bool {
    const OPENERS: &[&str] = &[
        "so",
        "then",
        "that",
        "this",
        "these",
        "those",
        "it",
        "its",
        "they",
        "there",
        "otherwise",
        "but",
        "and",
        "also",
        "because",
        "therefore",
        "both",
    ];
    let first = sentence
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("")
        .to_lowercase();
    OPENERS.contains(&first.as_str())
}

/// Whether two sentences share so many terms that quoting both is redundant.
fn similar(a: &BTreeSet<String>, b: &BTreeSet<String>) -> bool {
    let shared = a.intersection(b).count();
    let union = a.len() + b.len() - shared;
    union > 0 && shared * 10 > union * 6
}

/// Splits text into analysed terms, the same way for documents and queries.
///
/// Text is lowercased (Unicode-aware) and split on every character that is
/// not alphanumeric, so `PODCYCLE_SHUTDOWN_DELAY` gives `podcycl`,
/// `shutdown` and `delay`, while `k8s`, `503` and `p95` stay whole. A
/// camelCase word also yields its parts after the whole word, so
/// `startupProbe` matches both `startupProbe` and "startup probe". Stop words
/// and single letters are dropped, and purely alphabetic ASCII words are
/// stemmed lightly: plural `s`/`es`/`ies`, `ment`, `ed`, `ing` and a final `e`
/// are removed, so `probes`, `probed` and `probing` all become `prob`.
#[must_use]
pub(crate) fn tokenize(text: &str) -> Vec<String> {
    let mut terms = Vec::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        push_term(&mut terms, word);
        if word.chars().skip(1).any(char::is_uppercase) {
            let parts = camel_case_parts(word);
            if parts.len() > 1 {
                for part in parts {
                    push_term(&mut terms, part);
                }
            }
        }
    }
    terms
}

/// Lowercases, filters and stems one word, appending the resulting term.
fn push_term(terms: &mut Vec<String>, word: &str) {
    let lower = if word.is_ascii() {
        word.to_ascii_lowercase()
    } else {
        word.to_lowercase()
    };
    let mut chars = lower.chars();
    let single_letter = matches!((chars.next(), chars.next()), (Some(c), None) if !c.is_numeric());
    if !single_letter && STOP_WORDS.binary_search(&lower.as_str()).is_err() {
        terms.push(stem(lower));
    }
}

/// Splits a word where a lowercase letter or digit is followed by an
/// uppercase letter that is not the last one: `terminationGracePeriodSeconds`
/// gives `termination`, `Grace`, `Period`, `Seconds`; `isNaN` gives `is` and
/// `NaN`; `OOMKilled` and `k8s` stay whole.
fn camel_case_parts(word: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut previous: Option<char> = None;
    for (i, c) in word.char_indices() {
        if let Some(p) = previous {
            let rest_is_longer = word[i..].chars().nth(1).is_some();
            if c.is_uppercase() && (p.is_lowercase() || p.is_numeric()) && rest_is_longer {
                parts.push(&word[start..i]);
                start = i;
            }
        }
        previous = Some(c);
    }
    parts.push(&word[start..]);
    parts
}

/// Light suffix stripping for lowercase ASCII words; anything else (numbers,
/// words with digits, non-ASCII words) is returned unchanged.
fn stem(word: String) -> String {
    if !word.bytes().all(|b| b.is_ascii_lowercase()) {
        // A plural number such as `502s` or `100s` matches the number itself.
        let number = word
            .strip_suffix('s')
            .filter(|n| n.len() >= 3 && n.bytes().all(|b| b.is_ascii_digit()));
        return number.map_or(word.clone(), str::to_owned);
    }
    let mut w = word;
    // Plurals.
    if w.ends_with("sses") {
        w.truncate(w.len() - 2);
    } else if w.ends_with("ies") && w.len() > 4 {
        w.truncate(w.len() - 3);
        w.push('y');
    } else if w.ends_with('s')
        && !w.ends_with("ss")
        && !w.ends_with("us")
        && !w.ends_with("is")
        && w.len() > 3
    {
        w.truncate(w.len() - 1);
    }
    // Nouns in -ment: `deployment` meets `deploy`, `requirement` meets `required`.
    if w.ends_with("ment") && w.len() >= 9 {
        w.truncate(w.len() - 4);
    }
    // Past tense and progressive forms.
    if w.ends_with("ied") && w.len() > 4 {
        w.truncate(w.len() - 3);
        w.push('y');
    } else if w.ends_with("ed") && !w.ends_with("eed") {
        strip_verb_suffix(&mut w, 2);
    } else if w.ends_with("ing") {
        strip_verb_suffix(&mut w, 3);
    }
    // A final `e`, so that `serve` meets `serving` and `cache` meets `caches`.
    if w.ends_with('e') && w.len() > 3 {
        w.truncate(w.len() - 1);
    }
    w
}

/// Removes a verb suffix of `len` bytes when a real stem (three letters or
/// more, with a vowel) remains, and undoubles a final doubled consonant
/// (`stopped` -> `stop`, but `killed` -> `kill`).
fn strip_verb_suffix(w: &mut String, len: usize) {
    let stem = &w[..w.len() - len];
    if stem.len() < 3 || !stem.bytes().any(|b| b"aeiouy".contains(&b)) {
        return;
    }
    w.truncate(w.len() - len);
    let bytes = w.as_bytes();
    let (last, before) = (bytes[bytes.len() - 1], bytes[bytes.len() - 2]);
    if last == before && !b"aeiouylsz".contains(&last) {
        w.pop();
    }
}

/// A block of prose before sentence splitting: a paragraph, a list item or a
/// table row, with terms that belong to it without being quoted (a table's
/// header).
struct Block {
    text: String,
    extra_terms: Vec<String>,
}

/// Splits a Markdown body into quotable sentences.
///
/// Headings are skipped, list items and table rows become their own blocks,
/// inline markup is removed, and a sentence ending with `:` that introduces a
/// one- or two-line code block quotes that code inline. A bold lead-in such as
/// `**Finalizers.**` is not quoted but its terms still match the sentence that
/// follows it; table rows likewise match their column headers.
fn split_passages(body: &str) -> Vec<Passage> {
    let mut passages: Vec<Passage> = Vec::new();
    let mut blocks: Vec<Block> = Vec::new();
    let mut paragraph: Vec<&str> = Vec::new();
    let mut code: Option<(&str, Vec<&str>)> = None;
    let mut table_header: Option<Vec<String>> = None;
    let mut block_id = 0;

    let flush = |paragraph: &mut Vec<&str>, blocks: &mut Vec<Block>| {
        if !paragraph.is_empty() {
            blocks.push(Block {
                text: paragraph.join(" "),
                extra_terms: Vec::new(),
            });
            paragraph.clear();
        }
    };

    for raw in body.lines() {
        let line = raw.trim();
        if let Some((lang, lines)) = code.as_mut() {
            if line.starts_with("```") {
                passages_from_blocks(&mut blocks, &mut passages, &mut block_id);
                attach_code(&mut passages, lang, lines);
                code = None;
            } else if !line.is_empty() {
                lines.push(line);
            }
            continue;
        }
        if let Some(lang) = line.strip_prefix("```") {
            flush(&mut paragraph, &mut blocks);
            code = Some((lang.trim(), Vec::new()));
            continue;
        }
        if !line.starts_with('|') {
            table_header = None;
        }
        if line.is_empty() || line.starts_with('#') {
            flush(&mut paragraph, &mut blocks);
        } else if line.starts_with('|') {
            flush(&mut paragraph, &mut blocks);
            let cells = table_cells(line);
            let separator = cells
                .iter()
                .all(|cell| cell.chars().all(|c| matches!(c, '-' | ':')));
            if cells.is_empty() || separator {
                continue;
            }
            match &table_header {
                None => table_header = Some(cells.iter().map(|c| clean_inline(c)).collect()),
                Some(header) => blocks.push(table_row_block(header, &cells)),
            }
        } else if let Some(item) = list_item(line) {
            flush(&mut paragraph, &mut blocks);
            paragraph.push(item);
        } else {
            paragraph.push(line.strip_prefix("> ").unwrap_or(line));
        }
    }
    flush(&mut paragraph, &mut blocks);
    passages_from_blocks(&mut blocks, &mut passages, &mut block_id);
    passages
}

/// Turns pending blocks into sentences, numbering the blocks.
fn passages_from_blocks(
    blocks: &mut Vec<Block>,
    passages: &mut Vec<Passage>,
    block_id: &mut usize,
) {
    for block in blocks.drain(..) {
        let (label, rest) = split_label(&block.text);
        let mut sentences: Vec<(String, bool)> = Vec::new();
        if let Some(label) = label {
            sentences.push((clean_inline(label), true));
        }
        sentences.extend(
            split_sentences(&clean_inline(rest))
                .into_iter()
                .map(|sentence| (sentence, false)),
        );
        let count = sentences.len();
        let mut extra = block.extra_terms;
        let mut fragment: Option<String> = None;
        for (i, (sentence, label)) in sentences.into_iter().enumerate() {
            let sentence = match fragment.take() {
                Some(start) => format!("{start} {sentence}"),
                None => sentence,
            };
            let words = sentence.split_whitespace().count();
            // A fragment such as "Finalizers." or "137 (128 + 9, SIGKILL)."
            // introduces the next sentence of its block: quote them together.
            if i + 1 < count && words < MIN_SENTENCE_WORDS + 2 && sentence.ends_with('.') {
                fragment = Some(sentence);
                continue;
            }
            let dangling = sentence.ends_with(':');
            if !dangling && words < MIN_SENTENCE_WORDS {
                continue;
            }
            let mut terms: BTreeSet<String> = tokenize(&sentence).into_iter().collect();
            terms.extend(extra.drain(..));
            let mut text = sentence;
            if !dangling && !text.ends_with(['.', '!', '?']) {
                text.push('.');
            }
            passages.push(Passage {
                text,
                terms,
                dangling,
                label,
                block: *block_id,
            });
        }
        *block_id += 1;
    }
}

/// Quotes a short code block after the sentence that introduced it: one or
/// two shell commands (`a` then `b`), or a short expression such as a
/// `PromQL` query on one line. Configuration files (YAML, JSON) are never quoted.
fn attach_code(passages: &mut [Passage], lang: &str, lines: &[&str]) {
    let Some(last) = passages.last_mut() else {
        return;
    };
    if !last.dangling || lines.is_empty() {
        return;
    }
    let shell = matches!(lang, "sh" | "bash" | "shell" | "console");
    let quoted = if shell {
        let fits = lines.len() <= 2 && lines.iter().all(|l| l.len() <= 120 && !l.ends_with('\\'));
        fits.then(|| {
            let commands: Vec<String> = lines.iter().map(|line| format!("`{line}`")).collect();
            commands.join(" then ")
        })
    } else {
        let expression = lines.join(" ");
        let fits = matches!(lang, "" | "promql" | "text")
            && lines.len() <= 4
            && expression.len() <= 260
            && !lines.iter().any(|l| l.contains(" #"));
        fits.then(|| format!("`{expression}`"))
    };
    if let Some(quoted) = quoted {
        last.text = format!("{} {quoted}.", last.text);
        last.terms
            .extend(lines.iter().flat_map(|line| tokenize(line)));
        last.dangling = false;
    }
}

/// The content of a list item line (`- x`, `* x`, `1. x`), if it is one.
fn list_item(line: &str) -> Option<&str> {
    if let Some(item) = line.strip_prefix("- ").or_else(|| line.strip_prefix("* ")) {
        return Some(item);
    }
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 {
        return line[digits..].strip_prefix(". ");
    }
    None
}

/// The trimmed, non-empty cells of a table row.
fn table_cells(line: &str) -> Vec<&str> {
    line.trim_matches('|')
        .split('|')
        .map(str::trim)
        .filter(|cell| !cell.is_empty())
        .collect()
}

/// A table row as a sentence: `| 4 | text |` under a `Code` column reads
/// `Code 4: text`; `| a | b | c |` reads `a (b): c`. The header's words match
/// the row without being quoted.
fn table_row_block(header: &[String], cells: &[&str]) -> Block {
    let key = clean_inline(cells[0]);
    let key = match header.first() {
        Some(name) if key.len() <= 12 && key.bytes().any(|b| b.is_ascii_digit()) => {
            format!("{name} {key}")
        }
        _ => key,
    };
    let text = match cells {
        [_] => key,
        [_, value] => format!("{key}: {value}"),
        [_, extra, value] => format!("{key} ({extra}): {value}"),
        [_, rest @ ..] => format!("{key}: {}", rest.join(", ")),
        [] => String::new(),
    };
    Block {
        text,
        extra_terms: header.iter().flat_map(|name| tokenize(name)).collect(),
    }
}

/// Splits a leading bold label (`**Label.** text`, `**2. Label.** text`) from
/// a block, without its number.
fn split_label(block: &str) -> (Option<&str>, &str) {
    let split = block.strip_prefix("**").and_then(|after| {
        let end = after.find("**")?;
        let label = &after[..end];
        let rest = after[end + 2..].trim_start();
        let sentence_like = !rest.is_empty() && label.ends_with(['.', ':', '?']);
        sentence_like.then(|| (list_item(label).unwrap_or(label), rest))
    });
    match split {
        Some((label, rest)) => (Some(label), rest),
        None => (None, block),
    }
}

/// Removes inline Markdown: emphasis markers, backticks and link targets.
fn clean_inline(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let link = after.find("](").and_then(|close| {
            after[close + 2..]
                .find(')')
                .map(|end| (&after[..close], close + 2 + end + 1))
        });
        if let Some((label, consumed)) = link {
            out.push_str(label);
            rest = &after[consumed..];
        } else {
            out.push('[');
            rest = after;
        }
    }
    out.push_str(rest);
    out.replace("**", "").replace('`', "")
}

/// Splits prose into sentences at `.`, `!` or `?` followed by whitespace,
/// except after common abbreviations.
fn split_sentences(text: &str) -> Vec<String> {
    const ABBREVIATIONS: &[&str] = &["e.g.", "i.e.", "etc.", "vs."];
    let mut sentences = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if !matches!(c, '.' | '!' | '?') {
            continue;
        }
        let at_break = chars.peek().is_some_and(|&(_, next)| next.is_whitespace());
        if !at_break {
            continue;
        }
        let end = i + c.len_utf8();
        let candidate = text[start..end].trim();
        let last_word = candidate.rsplit(' ').next().unwrap_or("").to_lowercase();
        if ABBREVIATIONS.contains(&last_word.as_str()) {
            continue;
        }
        if !candidate.is_empty() {
            sentences.push(candidate.to_owned());
        }
        start = end;
    }
    let tail = text[start..].trim();
    if !tail.is_empty() {
        sentences.push(tail.to_owned());
    }
    sentences
}

/// Reads every `*.md` file of `dir` as an article, in file-name order. The
/// slug of each article is its file name without the extension.
///
/// # Errors
///
/// Returns a message naming the directory or the file when the directory
/// cannot be read, holds no `.md` file, or a file cannot be read or parsed.
pub(crate) fn load_dir(dir: impl AsRef<Path>) -> Result<Vec<Article>, String> {
    let dir = dir.as_ref();
    let entries = fs::read_dir(dir)
        .map_err(|e| format!("cannot read knowledge directory {}: {e}", dir.display()))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| format!("cannot list knowledge directory {}: {e}", dir.display()))?;
        let path = entry.path();
        let is_markdown = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("md"));
        if is_markdown && path.is_file() {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        return Err(format!(
            "knowledge directory {} contains no .md articles",
            dir.display()
        ));
    }
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let slug = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .ok_or_else(|| format!("{}: file name is not valid UTF-8", path.display()))?;
            let text = fs::read_to_string(path)
                .map_err(|e| format!("cannot read article {}: {e}", path.display()))?;
            Article::parse(slug, &text).map_err(|e| format!("{}: {e}", path.display()))
        })
        .collect()
}

/// Slugs and texts of the articles shipped in `examples/chatbot/knowledge/`.
/// Keep in sync with the directory; a unit test checks it.
const BUILTIN: &[(&str, &str)] = &[
    (
        "alerting-during-deploys",
        include_str!("../knowledge/alerting-during-deploys.md"),
    ),
    (
        "app-version-downward-api",
        include_str!("../knowledge/app-version-downward-api.md"),
    ),
    (
        "argo-analysis-nan-no-data",
        include_str!("../knowledge/argo-analysis-nan-no-data.md"),
    ),
    (
        "argo-rollouts-canary-analysis",
        include_str!("../knowledge/argo-rollouts-canary-analysis.md"),
    ),
    (
        "blue-green-switch-and-rollback",
        include_str!("../knowledge/blue-green-switch-and-rollback.md"),
    ),
    (
        "canary-by-replica-ratio",
        include_str!("../knowledge/canary-by-replica-ratio.md"),
    ),
    (
        "canary-error-ratio-promql",
        include_str!("../knowledge/canary-error-ratio-promql.md"),
    ),
    (
        "canary-p95-latency-promql",
        include_str!("../knowledge/canary-p95-latency-promql.md"),
    ),
    (
        "chat-api-reference",
        include_str!("../knowledge/chat-api-reference.md"),
    ),
    (
        "chatbot-configuration",
        include_str!("../knowledge/chatbot-configuration.md"),
    ),
    (
        "drain-timeout-long-requests",
        include_str!("../knowledge/drain-timeout-long-requests.md"),
    ),
    ("exit-codes", include_str!("../knowledge/exit-codes.md")),
    (
        "fault-injection-bad-canary",
        include_str!("../knowledge/fault-injection-bad-canary.md"),
    ),
    (
        "graceful-shutdown-timeline",
        include_str!("../knowledge/graceful-shutdown-timeline.md"),
    ),
    (
        "keep-alive-connections",
        include_str!("../knowledge/keep-alive-connections.md"),
    ),
    (
        "lifecycle-metrics",
        include_str!("../knowledge/lifecycle-metrics.md"),
    ),
    (
        "liveness-probe-best-practices",
        include_str!("../knowledge/liveness-probe-best-practices.md"),
    ),
    (
        "no-prestop-sleep-needed",
        include_str!("../knowledge/no-prestop-sleep-needed.md"),
    ),
    (
        "pod-disruption-budget",
        include_str!("../knowledge/pod-disruption-budget.md"),
    ),
    (
        "podcycle-environment-variables",
        include_str!("../knowledge/podcycle-environment-variables.md"),
    ),
    (
        "probes-readiness-liveness-startup",
        include_str!("../knowledge/probes-readiness-liveness-startup.md"),
    ),
    (
        "prometheus-scrape-setup",
        include_str!("../knowledge/prometheus-scrape-setup.md"),
    ),
    (
        "readyz-endpoint-checks",
        include_str!("../knowledge/readyz-endpoint-checks.md"),
    ),
    (
        "recreate-vs-rolling-update",
        include_str!("../knowledge/recreate-vs-rolling-update.md"),
    ),
    (
        "requests-after-unready",
        include_str!("../knowledge/requests-after-unready.md"),
    ),
    (
        "resources-and-probe-timeouts",
        include_str!("../knowledge/resources-and-probe-timeouts.md"),
    ),
    (
        "rolling-update-maxsurge-maxunavailable",
        include_str!("../knowledge/rolling-update-maxsurge-maxunavailable.md"),
    ),
    (
        "rollout-status-and-rollback",
        include_str!("../knowledge/rollout-status-and-rollback.md"),
    ),
    (
        "running-locally-and-sigterm",
        include_str!("../knowledge/running-locally-and-sigterm.md"),
    ),
    (
        "shutdown-hooks-background-tasks",
        include_str!("../knowledge/shutdown-hooks-background-tasks.md"),
    ),
    (
        "sizing-termination-grace-period",
        include_str!("../knowledge/sizing-termination-grace-period.md"),
    ),
    (
        "sse-streaming-during-drains",
        include_str!("../knowledge/sse-streaming-during-drains.md"),
    ),
    (
        "startup-probe-sizing",
        include_str!("../knowledge/startup-probe-sizing.md"),
    ),
    (
        "troubleshooting-502-during-deploy",
        include_str!("../knowledge/troubleshooting-502-during-deploy.md"),
    ),
    (
        "troubleshooting-crashloopbackoff-warm-up",
        include_str!("../knowledge/troubleshooting-crashloopbackoff-warm-up.md"),
    ),
    (
        "troubleshooting-grace-period-config-error",
        include_str!("../knowledge/troubleshooting-grace-period-config-error.md"),
    ),
    (
        "troubleshooting-stuck-terminating-pods",
        include_str!("../knowledge/troubleshooting-stuck-terminating-pods.md"),
    ),
    (
        "tuning-shutdown-delay",
        include_str!("../knowledge/tuning-shutdown-delay.md"),
    ),
    (
        "version-labelled-metrics",
        include_str!("../knowledge/version-labelled-metrics.md"),
    ),
    (
        "warm-up-knowledge-base-and-model",
        include_str!("../knowledge/warm-up-knowledge-base-and-model.md"),
    ),
];

/// The support articles compiled into the binary, in slug order.
///
/// # Panics
///
/// Never in practice: every shipped article is checked by the unit tests.
#[must_use]
pub(crate) fn builtin() -> Vec<Article> {
    BUILTIN
        .iter()
        .map(|(slug, text)| {
            Article::parse(slug, text)
                .unwrap_or_else(|e| panic!("built-in knowledge article is invalid: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn index() -> Index {
        Index::build(builtin())
    }

    fn top_slug(index: &Index, query: &str) -> String {
        index
            .search(query, 1)
            .first()
            .map(|hit| hit.slug.clone())
            .unwrap_or_default()
    }

    fn doc(slug: &str, title: &str, body: &str) -> Article {
        Article {
            slug: slug.to_owned(),
            title: title.to_owned(),
            body: body.to_owned(),
        }
    }

    // ---- tokenizer -------------------------------------------------------

    #[test]
    fn tokenize_lowercases_and_splits_on_punctuation() {
        assert_eq!(
            tokenize("Readiness-Probe,LIVENESS;startup/probe!"),
            ["readiness", "prob", "liveness", "startup", "prob"]
        );
        assert_eq!(
            tokenize("PODCYCLE_SHUTDOWN_DELAY=5s"),
            ["podcycl", "shutdown", "delay", "5s"]
        );
    }

    #[test]
    fn tokenize_keeps_numbers_and_alphanumeric_words() {
        assert_eq!(
            tokenize("k8s 503 p95 HTTP/2"),
            ["k8s", "503", "p95", "http", "2"]
        );
        assert_eq!(tokenize("exit code 4"), ["exit", "cod", "4"]);
    }

    #[test]
    fn tokenize_drops_stop_words_and_single_letters() {
        assert_eq!(
            tokenize("What is the readiness probe for?"),
            ["readiness", "prob"]
        );
        assert_eq!(tokenize("the pod's state; don't"), ["pod", "stat", "don"]);
        assert!(tokenize("how do I do it?").is_empty());
    }

    #[test]
    fn stop_words_are_sorted_and_lowercase() {
        assert!(STOP_WORDS.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(STOP_WORDS.iter().all(|w| *w == w.to_lowercase()));
    }

    #[test]
    fn tokenize_handles_empty_and_symbol_only_input() {
        assert!(tokenize("").is_empty());
        assert!(tokenize("   \n\t ").is_empty());
        assert!(tokenize("!?.,;:-_/\\|()[]{}").is_empty());
    }

    #[test]
    fn tokenize_expands_camel_case_words() {
        assert_eq!(
            tokenize("terminationGracePeriodSeconds"),
            [
                "terminationgraceperiodsecond",
                "termination",
                "grac",
                "period",
                "second"
            ]
        );
        assert_eq!(tokenize("maxSurge"), ["maxsurg", "max", "surg"]);
        assert_eq!(tokenize("isNaN"), ["isnan", "nan"]);
        assert_eq!(
            tokenize("OOMKilled CrashLoopBackOff"),
            [
                "oomkill",
                "crashloopbackoff",
                "crash",
                "loop",
                "back",
                "off"
            ]
        );
        // The parts let "startup probe" find `startupProbe` and vice versa.
        let joined: BTreeSet<String> = tokenize("startupProbe").into_iter().collect();
        assert!(tokenize("startup probe").iter().all(|t| joined.contains(t)));
    }

    #[test]
    fn tokenize_is_unicode_aware() {
        assert_eq!(tokenize("ÉTAT Größe"), ["état", "größe"]);
        assert_eq!(tokenize("naïve—café"), ["naïve", "café"]);
        assert_eq!(tokenize("ΣΊΣΥΦΟΣ"), ["σίσυφος"]);
        assert_eq!(tokenize("日本語 テスト"), ["日本語", "テスト"]);
        // Non-ASCII words are not stemmed.
        assert_eq!(tokenize("cafés"), ["cafés"]);
    }

    #[test]
    fn stemming_unifies_common_word_forms() {
        let same = |a: &str, b: &str| assert_eq!(tokenize(a), tokenize(b), "{a} vs {b}");
        same("probes", "probe");
        same("probing", "probed");
        same("draining", "drain");
        same("drained", "drains");
        same("serving", "serve");
        same("caches", "cache");
        same("retries", "retry");
        same("processes", "process");
        same("stopped", "stop");
        same("exceeded", "exceed");
        same("deployments", "deploy");
        same("requirement", "required");
        assert_eq!(tokenize("killed"), ["kill"]);
        assert_eq!(tokenize("status"), ["status"]);
        assert_eq!(tokenize("analysis"), ["analysis"]);
        assert_eq!(tokenize("string ping need"), ["string", "ping", "need"]);
    }

    // ---- articles ----------------------------------------------------------

    #[test]
    fn article_parse_reads_title_and_body() {
        let article = Article::parse("probes", "# Probes\n\nReadiness and liveness.\n").unwrap();
        assert_eq!(article.slug, "probes");
        assert_eq!(article.title, "Probes");
        assert_eq!(article.body, "Readiness and liveness.");
        let crlf = Article::parse("x", "\u{feff}\r\n# Title \r\nBody\r\nmore\r\n").unwrap();
        assert_eq!(crlf.title, "Title");
        assert_eq!(crlf.body, "Body\nmore");
    }

    #[test]
    fn article_parse_rejects_missing_title_or_body() {
        let error = |slug: &str, text: &str| Article::parse(slug, text).unwrap_err();
        assert!(error("a", "no title here\nbody").contains("# Title"));
        assert!(error("a", "## Second level\nbody").contains("# Title"));
        assert!(error("a", "#NoSpace\nbody").contains("# Title"));
        assert!(error("a", "#  \nbody").contains("empty title"));
        assert!(error("a", "# Title\n\n  \n").contains("empty body"));
        assert!(error("a", "# Title").contains("empty body"));
        assert!(error("a", "").contains("# Title"));
        assert!(error(" ", "# T\nbody").contains("slug"));
    }

    #[test]
    fn builtin_articles_are_valid_and_sized() {
        let articles = builtin();
        assert!(
            (30..=40).contains(&articles.len()),
            "{} articles",
            articles.len()
        );
        let mut slugs = BTreeSet::new();
        for article in &articles {
            assert!(
                slugs.insert(article.slug.clone()),
                "duplicate {}",
                article.slug
            );
            let words =
                article.body.split_whitespace().count() + article.title.split_whitespace().count();
            assert!(
                (150..=400).contains(&words),
                "{} has {words} words",
                article.slug
            );
            assert!(
                article
                    .slug
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{} is not a kebab-case slug",
                article.slug
            );
        }
        let sorted: Vec<&str> = BUILTIN.iter().map(|(slug, _)| *slug).collect();
        let mut expected = sorted.clone();
        expected.sort_unstable();
        assert_eq!(sorted, expected, "BUILTIN must be sorted by slug");
    }

    #[test]
    fn builtin_list_matches_knowledge_directory() {
        let dir = match option_env!("CARGO_MANIFEST_DIR") {
            Some(root) => Path::new(root).join("knowledge"),
            None => return,
        };
        if !dir.is_dir() {
            eprintln!("skipping: knowledge directory {} not found", dir.display());
            return;
        }
        let from_disk = load_dir(&dir).unwrap();
        let md_files = fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "md")
            })
            .count();
        assert_eq!(builtin().len(), md_files, "update BUILTIN in retrieval.rs");
        assert_eq!(builtin(), from_disk);
    }

    #[test]
    fn load_dir_reports_the_failing_file() {
        let dir = std::env::temp_dir().join(format!("retrieval-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        assert!(load_dir(&dir).unwrap_err().contains("no .md articles"));
        fs::write(dir.join("b-second.md"), "# Second\nBody two.").unwrap();
        fs::write(dir.join("a-first.md"), "# First\nBody one.").unwrap();
        fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let articles = load_dir(&dir).unwrap();
        let slugs: Vec<&str> = articles.iter().map(|a| a.slug.as_str()).collect();
        assert_eq!(slugs, ["a-first", "b-second"]);
        fs::write(dir.join("c-broken.md"), "no title").unwrap();
        let err = load_dir(&dir).unwrap_err();
        assert!(err.contains("c-broken.md"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
        let err = load_dir(&dir).unwrap_err();
        assert!(err.contains("cannot read knowledge directory"), "{err}");
    }

    // ---- BM25 ----------------------------------------------------------------

    #[test]
    fn idf_matches_the_bm25_formula() {
        let index = Index::build(vec![
            doc("a", "Alpha", "common alpha words"),
            doc("b", "Beta", "common beta words"),
            doc("c", "Gamma", "common gamma words"),
        ]);
        let everywhere = index.idf_of("common");
        assert!(everywhere > 0.0, "idf must stay positive");
        assert!(
            everywhere < 0.2,
            "idf of a term in every doc is small: {everywhere}"
        );
        let expected = (1.0f64 + (3.0 - 3.0 + 0.5) / (3.0 + 0.5)).ln();
        assert!((everywhere - expected).abs() < 1e-12);
        let rare = index.idf_of("alpha");
        assert!((rare - (1.0f64 + 2.5 / 1.5).ln()).abs() < 1e-12);
        assert!(rare > everywhere);
        assert!(index.idf_of("unknown") > rare);
    }

    #[test]
    fn bm25_scores_match_a_hand_computation() {
        // One document of weighted length 2 (title) + 3 (body) = 5 in a corpus
        // whose average length is 5, so the length norm is exactly K1.
        let index = Index::build(vec![
            doc("one", "Drain", "drain drain timeout"),
            doc("two", "Probe", "startup liveness readiness"),
        ]);
        let hits = index.search("drain", 10);
        assert_eq!(hits.len(), 1);
        let tf = TITLE_WEIGHT + 2.0;
        let idf = (1.0f64 + (2.0 - 1.0 + 0.5) / (1.0 + 0.5)).ln();
        let expected = idf * tf * (K1 + 1.0) / (tf + K1);
        assert!(
            (hits[0].score - expected).abs() < 1e-12,
            "{} vs {expected}",
            hits[0].score
        );
    }

    #[test]
    fn title_terms_outweigh_body_terms() {
        let index = Index::build(vec![
            doc("body", "Other topic", "canary release notes here"),
            doc("title", "Canary", "release notes here and more"),
        ]);
        assert_eq!(top_slug(&index, "canary"), "title");
    }

    #[test]
    fn empty_or_meaningless_queries_return_nothing() {
        let index = index();
        assert!(index.search("", 5).is_empty());
        assert!(index.search("   ?!  ", 5).is_empty());
        assert!(index.search("how is it", 5).is_empty());
        assert!(index.search("readiness", 0).is_empty());
        assert!(index.search("xyzzy plugh", 5).is_empty());
        let empty = Index::build(Vec::new());
        assert!(empty.is_empty());
        assert!(empty.search("readiness", 5).is_empty());
        assert!(!empty.answer("readiness", 3).found());
    }

    #[test]
    fn search_results_are_sorted_positive_and_limited() {
        let index = index();
        let hits = index.search("graceful shutdown drain timeout", 5);
        assert_eq!(hits.len(), 5);
        for pair in hits.windows(2) {
            assert!(pair[0].score >= pair[1].score);
        }
        assert!(hits.iter().all(|hit| hit.score > 0.0));
        for hit in &hits {
            assert_eq!(index.articles()[hit.index].slug, hit.slug);
        }
    }

    #[test]
    fn ties_are_broken_by_slug() {
        let index = Index::build(vec![
            doc("zeta", "Same", "identical text"),
            doc("alpha", "Same", "identical text"),
            doc("mid", "Same", "identical text"),
        ]);
        let slugs: Vec<String> = index
            .search("identical", 10)
            .into_iter()
            .map(|h| h.slug)
            .collect();
        assert_eq!(slugs, ["alpha", "mid", "zeta"]);
    }

    #[test]
    fn search_and_answer_are_deterministic() {
        let first = index();
        let second = index();
        for query in [
            "canary error ratio",
            "readiness probe",
            "exit code 4",
            "stuck Terminating",
        ] {
            assert_eq!(first.search(query, 10), second.search(query, 10));
            assert_eq!(first.search(query, 10), first.search(query, 10));
            assert_eq!(first.answer(query, 3), second.answer(query, 3));
        }
    }

    // ---- real questions against the built-in knowledge base ------------------

    #[test]
    fn real_questions_rank_the_right_article_first() {
        let index = index();
        let cases = [
            (
                "What is a readiness probe?",
                "probes-readiness-liveness-startup",
            ),
            (
                "difference between liveness and readiness probes",
                "probes-readiness-liveness-startup",
            ),
            (
                "How should I set terminationGracePeriodSeconds?",
                "sizing-termination-grace-period",
            ),
            ("Do I need a preStop sleep hook?", "no-prestop-sleep-needed"),
            (
                "maxSurge and maxUnavailable for zero downtime",
                "rolling-update-maxsurge-maxunavailable",
            ),
            (
                "how to switch blue green and roll back",
                "blue-green-switch-and-rollback",
            ),
            ("What does exit code 4 mean?", "exit-codes"),
            (
                "Pods are stuck in Terminating",
                "troubleshooting-stuck-terminating-pods",
            ),
            (
                "502 errors during a deploy",
                "troubleshooting-502-during-deploy",
            ),
            (
                "CrashLoopBackOff because warm-up is slow",
                "troubleshooting-crashloopbackoff-warm-up",
            ),
            (
                "PromQL for the canary error ratio",
                "canary-error-ratio-promql",
            ),
            ("p95 latency query per version", "canary-p95-latency-promql"),
            (
                "PodDisruptionBudget for node drains",
                "pod-disruption-budget",
            ),
            (
                "Argo Rollouts analysis NaN no data",
                "argo-analysis-nan-no-data",
            ),
            (
                "How big should the startupProbe failureThreshold be?",
                "startup-probe-sizing",
            ),
            (
                "keep-alive connections and Connection: close",
                "keep-alive-connections",
            ),
            (
                "server-sent events streaming while the pod drains",
                "sse-streaming-during-drains",
            ),
            (
                "set APP_VERSION from the pod label with the downward API",
                "app-version-downward-api",
            ),
            ("requests after unready counter", "requests-after-unready"),
            ("canary by replica ratio", "canary-by-replica-ratio"),
        ];
        let mut failures = Vec::new();
        for (question, expected) in cases {
            let got = top_slug(&index, question);
            if got != expected {
                failures.push(format!("{question:?}: expected {expected}, got {got}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn answers_quote_relevant_sentences_and_cite_sources() {
        let index = index();
        let answer = index.answer("How should I size terminationGracePeriodSeconds?", 3);
        assert!(answer.found());
        assert_eq!(answer.sources[0].slug, "sizing-termination-grace-period");
        assert!(
            answer.text.contains("terminationGracePeriodSeconds"),
            "{}",
            answer.text
        );

        let answer = index.answer("What does exit code 3 mean?", 3);
        assert!(answer.text.contains("warm-up"), "{}", answer.text);

        let answer = index.answer("Why is no preStop sleep needed?", 2);
        assert!(answer.sources.len() <= 2);
        assert!(
            answer.text.contains("PODCYCLE_SHUTDOWN_DELAY"),
            "{}",
            answer.text
        );
    }

    #[test]
    fn answers_have_two_to_four_clean_sentences() {
        let index = index();
        for question in [
            "readiness probe",
            "How do I roll back a blue/green switch?",
            "what is the default drain timeout",
            "How do I scrape metrics with a ServiceMonitor?",
            "canary error ratio PromQL",
            "pods stuck terminating",
            "exit code 137",
            "CHATBOT_FAULT_ERROR_RATE",
        ] {
            let answer = index.answer(question, 3);
            assert!(answer.found(), "{question}");
            assert!(!answer.sources.is_empty() && answer.sources.len() <= 3);
            let sentences = split_sentences(&answer.text).len();
            assert!((2..=6).contains(&sentences), "{question}: {}", answer.text);
            assert!(!answer.text.contains("**"), "{}", answer.text);
            assert!(!answer.text.contains("```"), "{}", answer.text);
            assert!(!answer.text.contains('\n'), "{}", answer.text);
            assert!(answer.text.ends_with(['.', '!', '?']), "{}", answer.text);
            assert!(answer.text.len() <= MAX_ANSWER_LEN + 300, "{}", answer.text);
            for source in &answer.sources {
                assert!(source.score > 0.0);
            }
        }
    }

    #[test]
    fn off_topic_questions_get_the_polite_fallback() {
        let index = index();
        for question in [
            "",
            "???",
            "What is the capital of France?",
            "How do I bake sourdough bread?",
            "tell me a joke about penguins",
        ] {
            let answer = index.answer(question, 3);
            assert_eq!(answer.text, NOT_FOUND_ANSWER, "{question}");
            assert!(answer.sources.is_empty(), "{question}");
        }
        let polite = "I could not find anything about that in the knowledge base";
        assert!(NOT_FOUND_ANSWER.starts_with(polite));
    }

    #[test]
    fn max_sources_limits_citations() {
        let index = index();
        let answer = index.answer("graceful shutdown drain hooks grace period", 1);
        assert_eq!(answer.sources.len(), 1);
        let answer = index.answer("graceful shutdown drain hooks grace period", 0);
        assert_eq!(answer.sources.len(), 1);
    }

    // ---- markdown handling -----------------------------------------------------

    #[test]
    fn passages_strip_markdown_and_skip_code() {
        let body = "Intro sentence with **bold** and `code` here. Second one follows now.\n\n\
                    ```yaml\nkey: value\n```\n\n\
                    - **Finalizers.** A pod with finalizers waits for its controller.\n\
                    - See [the docs](https://example.com) for more detail please.\n\n\
                    **2. Old pods stop accepting too early.** The load balancer still sends traffic.\n\n\
                    | Code | Meaning |\n| --- | --- |\n| 4 | The drain deadline passed and connections closed. |\n\n\
                    ## A heading is skipped\n\n\
                    Run this command now:\n\n```sh\nkubectl rollout undo deployment/chatbot\n```\n\n\
                    The error ratio query is:\n\n```promql\nsum(rate(a[5m]))\n/\nsum(rate(b[5m]))\n```\n\n\
                    A container spec looks like this:\n\n```yaml\nkey: value\n```\n";
        let passages = split_passages(body);
        let texts: Vec<&str> = passages.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "Intro sentence with bold and code here.",
                "Second one follows now.",
                "Finalizers. A pod with finalizers waits for its controller.",
                "See the docs for more detail please.",
                "Old pods stop accepting too early.",
                "The load balancer still sends traffic.",
                "Code 4: The drain deadline passed and connections closed.",
                "Run this command now: `kubectl rollout undo deployment/chatbot`.",
                "The error ratio query is: `sum(rate(a[5m])) / sum(rate(b[5m]))`.",
                "A container spec looks like this:",
            ]
        );
        let dangling: Vec<bool> = passages.iter().map(|p| p.dangling).collect();
        assert_eq!(dangling.iter().filter(|&&d| d).count(), 1);
        assert!(dangling[9]);
        assert!(passages[4].label && !passages[5].label);
        assert_eq!(passages[4].block, passages[5].block);
        assert_ne!(passages[5].block, passages[6].block);
        assert!(
            passages[6].terms.contains("mean"),
            "table header terms match rows"
        );
        assert!(
            passages[7].terms.contains("undo"),
            "quoted code is searchable"
        );
    }

    #[test]
    fn sentences_split_on_terminal_punctuation_only() {
        assert_eq!(
            split_sentences("Use 0.5 or 1.4.0 here. Really? Yes! e.g. this stays. End"),
            [
                "Use 0.5 or 1.4.0 here.",
                "Really?",
                "Yes!",
                "e.g. this stays.",
                "End"
            ]
        );
        assert!(split_sentences("").is_empty());
    }

    // ---- timing ------------------------------------------------------------------

    #[test]
    fn timing_of_build_and_search() {
        let articles = builtin();
        let started = Instant::now();
        let index = Index::build(articles);
        let build = started.elapsed();
        let queries = [
            "How should I size terminationGracePeriodSeconds?",
            "readiness probe",
            "canary error ratio promql",
            "pods stuck terminating",
        ];
        let rounds = 250;
        let calls = rounds * u32::try_from(queries.len()).unwrap();
        let started = Instant::now();
        for _ in 0..rounds {
            for query in queries {
                assert!(!index.search(query, 5).is_empty());
            }
        }
        let search = started.elapsed() / calls;
        let started = Instant::now();
        for _ in 0..rounds {
            for query in queries {
                assert!(index.answer(query, 3).found());
            }
        }
        let answer = started.elapsed() / calls;
        println!(
            "retrieval timing: build {build:?} for {} articles ({} terms); search {search:?}; answer {answer:?}",
            index.len(),
            index.postings.len()
        );
    }
}
