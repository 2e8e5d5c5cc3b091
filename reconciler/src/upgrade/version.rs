//! Co-op Cloud recipe versions: tags of the form `X.Y.Z+UPSTREAM` (DESIGN.md, "Versions and the
//! safety gate").
//!
//! Parsing is strict on purpose: a version ends up in git revisions, file paths
//! (`release/<version>`) and alert file contents, so anything that is not exactly
//! `<n>.<n>.<n>+<[A-Za-z0-9._-]+>` is refused rather than guessed at. Numbers have no leading
//! zeros, so `Display` reproduces the tag byte for byte and the tag can be found again.
//!
//! Ordering is recipe semver first, then the upstream part in a natural order (see
//! [`cmp_upstream`]), then the raw upstream string as a tiebreak so that `Ord` agrees with `Eq`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Longest tag accepted; real tags are far shorter, and a bound keeps error messages and file
/// names sane.
pub const MAX_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    /// Recipe semver `(major, minor, patch)`.
    pub recipe: (u64, u64, u64),
    /// The upstream app version after the `+`, verbatim.
    pub upstream: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid recipe version {tag:?}: {reason} (expected X.Y.Z+UPSTREAM, e.g. 1.2.3+4.5.6)")]
pub struct VersionError {
    pub tag: String,
    pub reason: String,
}

impl Version {
    pub fn new(
        recipe: (u64, u64, u64),
        upstream: impl Into<String>,
    ) -> Result<Version, VersionError> {
        let v = Version {
            recipe,
            upstream: upstream.into(),
        };
        // Re-parse the rendering so both constructors enforce exactly the same rules.
        v.to_string().parse()
    }

    pub fn recipe_major(&self) -> u64 {
        self.recipe.0
    }

    /// Whether the tag is a pre-release: its upstream part carries a pre-release word after
    /// the release number (`1.2-rc1`, `2.0.0-beta.2`, `3-alpha`, `1.0-pre`). A recipe part with
    /// a pre-release (`1.0.0-rc1+2.0`) does not parse as a version at all, so such a tag is
    /// never a candidate. Build flavours (`-alpine`, `-fpm`) are not pre-releases.
    pub fn is_prerelease(&self) -> bool {
        let up = strip_v(&self.upstream);
        chunks(up)
            .iter()
            .skip(1)
            .any(|c| matches!(c, Chunk::Text(t) if pre_release_word(t).is_some()))
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(tag: &str) -> Result<Version, VersionError> {
        let err = |reason: &str| VersionError {
            tag: tag.to_owned(),
            reason: reason.to_owned(),
        };
        if tag.len() > MAX_LEN {
            return Err(err(&format!("longer than {MAX_LEN} characters")));
        }
        let (recipe, upstream) = tag
            .split_once('+')
            .ok_or_else(|| err("no '+' separating the recipe version from the upstream version"))?;
        if upstream.is_empty() {
            return Err(err("empty upstream version after '+'"));
        }
        if let Some(c) = upstream
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(err(&format!(
                "upstream version contains {c:?}; only A-Z a-z 0-9 . _ - are allowed"
            )));
        }
        let parts: Vec<&str> = recipe.split('.').collect();
        if parts.len() != 3 {
            return Err(err(&format!(
                "recipe version {recipe:?} must have exactly three numeric components"
            )));
        }
        let mut nums = [0u64; 3];
        for (slot, part) in nums.iter_mut().zip(&parts) {
            *slot = parse_component(part)
                .map_err(|why| err(&format!("recipe component {part:?} {why}")))?;
        }
        Ok(Version {
            recipe: (nums[0], nums[1], nums[2]),
            upstream: upstream.to_owned(),
        })
    }
}

fn parse_component(part: &str) -> Result<u64, &'static str> {
    if part.is_empty() {
        return Err("is empty");
    }
    if !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err("is not a number");
    }
    // A leading zero would not survive Display, so the tag could not be found again.
    if part.len() > 1 && part.starts_with('0') {
        return Err("has a leading zero");
    }
    part.parse().map_err(|_| "is too large")
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b, c) = self.recipe;
        write!(f, "{a}.{b}.{c}+{}", self.upstream)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Version) -> Ordering {
        self.recipe
            .cmp(&other.recipe)
            .then_with(|| cmp_upstream(&self.upstream, &other.upstream))
            .then_with(|| self.upstream.cmp(&other.upstream))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Words that mark an upstream pre-release when they follow the release number, so that
/// `1.0.0-rc1 < 1.0.0`. Any other suffix (`-alpine`, `-fpm`) is a build flavour and sorts after
/// the bare number, as a longer string would.
const PRE_RELEASE: &[&str] = &["alpha", "beta", "rc", "pre", "preview", "dev", "snapshot"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk<'a> {
    Num(&'a str),
    Text(&'a str),
}

fn chunks(s: &str) -> Vec<Chunk<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = s.as_bytes();
    while start < bytes.len() {
        let digit = bytes[start].is_ascii_digit();
        let end = bytes[start..]
            .iter()
            .position(|b| b.is_ascii_digit() != digit)
            .map_or(bytes.len(), |n| start + n);
        let part = &s[start..end];
        out.push(if digit {
            Chunk::Num(part)
        } else {
            Chunk::Text(part)
        });
        start = end;
    }
    out
}

fn strip_v(s: &str) -> &str {
    match s.strip_prefix(['v', 'V']) {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => rest,
        _ => s,
    }
}

/// Compares digit strings numerically without overflowing on absurdly long numbers.
fn cmp_num(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn pre_release_word(text: &str) -> Option<String> {
    let word: String = text
        .trim_start_matches(['-', '.', '_'])
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_lowercase();
    PRE_RELEASE.contains(&word.as_str()).then_some(word)
}

/// Rank of what one side has where the two upstream versions first differ:
/// pre-release marker < end of string < other text < number.
fn rank(c: Option<&Chunk<'_>>) -> u8 {
    match c {
        Some(Chunk::Text(t)) if pre_release_word(t).is_some() => 0,
        None => 1,
        Some(Chunk::Text(_)) => 2,
        Some(Chunk::Num(_)) => 3,
    }
}

/// Natural order of upstream versions: an optional leading `v` is ignored, digit runs compare
/// numerically, other runs compare as text, a pre-release word (`-rc1`, `-beta`, ...) sorts
/// before the release it precedes, any other suffix (`-alpine`) after it. Returns `Equal` for
/// spellings that only differ in ignored details (`v1.2` vs `1.2`, `01` vs `1`); [`Version`]'s
/// `Ord` breaks that tie by the raw string.
pub fn cmp_upstream(a: &str, b: &str) -> Ordering {
    let ca = chunks(strip_v(a));
    let cb = chunks(strip_v(b));
    let mut i = 0;
    loop {
        let (x, y) = (ca.get(i), cb.get(i));
        let ord = match (x, y) {
            (None, None) => return Ordering::Equal,
            (Some(Chunk::Num(p)), Some(Chunk::Num(q))) => cmp_num(p, q),
            (Some(Chunk::Text(p)), Some(Chunk::Text(q))) => {
                match (pre_release_word(p), pre_release_word(q)) {
                    (Some(pw), Some(qw)) => pw.cmp(&qw),
                    (None, None) => p.cmp(q),
                    _ => rank(x).cmp(&rank(y)),
                }
            }
            _ => rank(x).cmp(&rank(y)),
        };
        if ord != Ordering::Equal {
            return ord;
        }
        i += 1;
    }
}

/// The leading number of an upstream version (`v26.6.2` -> `26`), if it has one.
fn upstream_major(upstream: &str) -> Option<&str> {
    let s = strip_v(upstream);
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    (end > 0).then(|| &s[..end])
}

/// Whether going from `from` to `to` is a major bump that the gate holds: the recipe major
/// grows (or, below 1.0.0, the recipe minor), or the upstream's leading number grows, or the upstream part changes and either
/// side has no leading number to compare (e.g. `latest`), since then nothing says it is safe.
pub fn is_major(from: &Version, to: &Version) -> bool {
    if to.recipe.0 > from.recipe.0 {
        return true;
    }
    // Semver: below 1.0.0 every minor may break, so `0.x` -> `0.y` is a major bump.
    if from.recipe.0 == 0 && to.recipe.0 == 0 && to.recipe.1 > from.recipe.1 {
        return true;
    }
    if from.upstream == to.upstream {
        return false;
    }
    match (upstream_major(&from.upstream), upstream_major(&to.upstream)) {
        (Some(f), Some(t)) => cmp_num(t, f) == Ordering::Greater,
        _ => true,
    }
}

/// The versions among git tag names, sorted ascending and deduplicated. Tags that are not
/// versions (`latest`, `v1.0.0`, `backup-2024`) are common in recipes and are skipped.
pub fn parse_tags<I, S>(tags: I) -> Vec<Version>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out: Vec<Version> = tags
        .into_iter()
        .filter_map(|t| match t.as_ref().parse::<Version>() {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::debug!(
                    tag = t.as_ref(),
                    "ignoring a tag that is not a recipe version: {e}"
                );
                None
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_round_trips() {
        for tag in [
            "0.0.0+0",
            "10.7.1+26.6.2",
            "1.2.3+v1.2",
            "2.0.0+3.5.0-alpine",
            "3.1.4+1.21.3-fpm",
            "1.0.0+latest",
            "1.0.0+1_2.x-Y",
            "18446744073709551615.0.0+1",
        ] {
            let parsed = v(tag);
            assert_eq!(parsed.to_string(), tag);
            assert_eq!(
                Version::new(parsed.recipe, parsed.upstream.clone()).unwrap(),
                parsed
            );
        }
        let x = v("10.7.1+26.6.2");
        assert_eq!(x.recipe, (10, 7, 1));
        assert_eq!(x.upstream, "26.6.2");
        assert_eq!(x.recipe_major(), 10);
    }

    #[test]
    fn odd_tags_are_rejected_with_a_reason() {
        let cases = [
            ("1.0.0", "no '+'"),
            ("v1.0.0+x", "not a number"),
            ("1.0.0+", "empty upstream"),
            ("1.0.0+a b", "contains ' '"),
            ("1.0.0+a/b", "contains '/'"),
            ("1.0.0+a+b", "contains '+'"),
            ("../x", "no '+'"),
            ("../x+1", "is empty"),
            ("1.0+1", "exactly three"),
            ("1.0.0.0+1", "exactly three"),
            ("1..0+1", "is empty"),
            ("01.0.0+1", "leading zero"),
            ("1.-1.0+1", "not a number"),
            ("1.0.0 +1", "not a number"),
            (" 1.0.0+1", "not a number"),
            ("1.0.0+1\n", "contains '\\n'"),
            ("1.0.0+é", "contains 'é'"),
            ("18446744073709551616.0.0+1", "too large"),
            ("", "no '+'"),
            ("+1", "exactly three"),
            ("latest", "no '+'"),
        ];
        for (tag, why) in cases {
            let e = tag.parse::<Version>().expect_err(tag);
            let msg = e.to_string();
            assert!(msg.contains(why), "{tag:?}: {msg}");
            assert!(msg.contains("X.Y.Z+UPSTREAM"), "{msg}");
            assert_eq!(e.tag, tag);
        }
        let long = format!("1.0.0+{}", "a".repeat(MAX_LEN));
        assert!(
            long.parse::<Version>()
                .unwrap_err()
                .to_string()
                .contains("longer than")
        );
        assert!(Version::new((1, 0, 0), "a b").is_err());
    }

    #[test]
    fn serde_is_a_plain_string() {
        let x = v("1.2.3+4.5-alpine");
        let json = serde_json::to_string(&x).unwrap();
        assert_eq!(json, "\"1.2.3+4.5-alpine\"");
        assert_eq!(serde_json::from_str::<Version>(&json).unwrap(), x);
        let e = serde_json::from_str::<Version>("\"1.2+x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("exactly three"), "{e}");
        assert!(serde_json::from_str::<Version>("12").is_err());
    }

    #[test]
    fn recipe_semver_orders_first() {
        assert!(v("1.10.0+1") > v("1.9.0+1"));
        assert!(v("2.0.0+1") > v("1.99.99+99"));
        assert!(v("1.0.1+0.1") > v("1.0.0+99.0"));
    }

    #[test]
    fn upstream_natural_order() {
        use Ordering::*;
        let cases = [
            ("1.10", "1.9", Greater),
            ("v1.2", "1.2", Equal),
            ("V2", "1", Greater),
            ("26.6.2", "26.6.10", Less),
            ("1.0.0-rc1", "1.0.0", Less),
            ("1.0.0-rc1", "1.0.0-rc2", Less),
            ("1.0.0-rc10", "1.0.0-rc2", Greater),
            ("1.0.0-alpha", "1.0.0-beta", Less),
            ("1.0.0-beta2", "1.0.0-rc1", Less),
            ("1.0.0rc1", "1.0.0", Less),
            ("1.0.0-rc1", "1.0.0.1", Less),
            ("3.5.0-alpine", "3.5.0", Greater),
            ("3.5.1-alpine", "3.5.0-alpine", Greater),
            ("1.21.3-fpm", "1.21.10-fpm", Less),
            ("1.0", "1.0.1", Less),
            ("01", "1", Equal),
            (
                "99999999999999999999999",
                "99999999999999999999998",
                Greater,
            ),
            ("latest", "1.0", Less),
            ("vx", "v1", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(cmp_upstream(a, b), want, "{a} vs {b}");
            assert_eq!(cmp_upstream(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn ord_agrees_with_eq() {
        let a = v("1.0.0+v1.2");
        let b = v("1.0.0+1.2");
        assert_ne!(a, b);
        assert_ne!(a.cmp(&b), Ordering::Equal);
        assert_eq!(a.cmp(&a.clone()), Ordering::Equal);
    }

    #[test]
    fn major_bumps() {
        let cases = [
            ("1.0.0+1.0", "2.0.0+1.0", true),    // recipe major
            ("1.0.0+1.0", "1.1.0+1.1", false),   // minors
            ("1.0.0+1.0", "1.0.1+1.0", false),   // patch, same upstream
            ("1.0.0+1.9", "1.1.0+2.0", true),    // upstream major
            ("1.0.0+v1.9", "1.1.0+v2.0", true),  // with v
            ("1.0.0+v1.9", "1.1.0+1.10", false), // v dropped, same major
            ("1.0.0+26.6.2", "1.1.0+27.0.0", true),
            ("1.0.0+9.0", "1.1.0+10.0", true), // numeric, not textual
            ("1.0.0+3.5-alpine", "1.1.0+3.6-alpine", false),
            ("1.0.0+latest", "1.1.0+latest", false), // unparseable but unchanged
            ("1.0.0+latest", "1.1.0+1.0", true),     // unparseable change
            ("1.0.0+1.0", "1.1.0+stable", true),
            ("1.0.0+2.0", "1.1.0+1.0", false), // upstream major shrinks: not a growth
            ("2.0.0+1.0", "1.5.0+1.0", false), // recipe major shrinks
        ];
        for (from, to, want) in cases {
            assert_eq!(is_major(&v(from), &v(to)), want, "{from} -> {to}");
        }
    }

    #[test]
    fn zero_minor_bumps_are_major() {
        let cases = [
            ("0.1.0+1.0", "0.2.0+1.0", true),  // 0.x -> 0.y: semver's major
            ("0.1.0+1.0", "0.1.5+1.0", false), // 0.x patch
            ("0.9.0+1.0", "1.0.0+1.0", true),  // 0.x -> 1.0
            ("1.1.0+1.0", "1.2.0+1.0", false), // >= 1: minors are minors
        ];
        for (from, to, want) in cases {
            assert_eq!(is_major(&v(from), &v(to)), want, "{from} -> {to}");
        }
    }

    #[test]
    fn pre_releases_are_recognised() {
        for tag in [
            "1.0.0+1.2-rc1",
            "1.0.0+2.0.0-beta.2",
            "1.0.0+3-alpha",
            "1.0.0+v1.0-pre",
            "1.0.0+1.0.0-RC.1",
            "1.0.0+26.0_dev",
            "1.0.0+5.0-preview3",
        ] {
            assert!(v(tag).is_prerelease(), "{tag}");
        }
        for tag in [
            "1.0.0+1.2",
            "1.0.0+3.5-alpine",
            "1.0.0+8.2-fpm",
            "1.0.0+latest",
            "1.0.0+1.0-prefork",
        ] {
            assert!(!v(tag).is_prerelease(), "{tag}");
        }
        // A pre-release recipe part is not a version at all: never a candidate.
        assert!("1.0.0-rc1+2.0".parse::<Version>().is_err());
        assert!(parse_tags(["1.0.0-rc1+2.0", "1.0.0+2.0"]) == vec![v("1.0.0+2.0")]);
    }

    #[test]
    fn parse_tags_sorts_dedups_and_skips_non_versions() {
        let tags = [
            "1.10.0+2.0",
            "latest",
            "1.2.0+1.0",
            "v1.0.0",
            "1.9.0+1.9",
            "1.2.0+1.0",
            "1.0.0+",
            "backup-2024-01-01",
        ];
        let got: Vec<String> = parse_tags(tags).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["1.2.0+1.0", "1.9.0+1.9", "1.10.0+2.0"]);
        assert!(parse_tags(Vec::<String>::new()).is_empty());
    }
}
