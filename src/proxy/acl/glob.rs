//! Redis's glob matching (`stringmatchlen` in `util.c`, case-sensitive), so
//! that a user's key patterns allow exactly the keys they allow in Redis
//! ACL: `*`, `?`, `[abc]`, `[^a-z]`, and `\` escaping the next character.

/// True when `key` matches `pattern` under Redis's rules.
pub fn matches(pattern: &[u8], key: &[u8]) -> bool {
    let mut skip_longer = false;
    match_from(pattern, key, &mut skip_longer)
}

/// The pattern byte at `i`; Redis reads the terminating NUL past the end.
fn at(p: &[u8], i: usize) -> u8 {
    p.get(i).copied().unwrap_or(0)
}

/// A port of `stringmatchlen_impl`. `skip_longer` is Redis's shortcut: once
/// a `*` has failed against every suffix, a longer match cannot succeed.
fn match_from(pattern: &[u8], string: &[u8], skip_longer: &mut bool) -> bool {
    let (mut p, mut s) = (0usize, 0usize);
    while p < pattern.len() && s < string.len() {
        match pattern[p] {
            b'*' => {
                while p + 1 < pattern.len() && pattern[p + 1] == b'*' {
                    p += 1;
                }
                if p + 1 == pattern.len() {
                    return true;
                }
                while s < string.len() {
                    if match_from(&pattern[p + 1..], &string[s..], skip_longer) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    s += 1;
                }
                *skip_longer = true;
                return false;
            }
            b'?' => s += 1,
            b'[' => {
                p += 1;
                let not = at(pattern, p) == b'^';
                if not {
                    p += 1;
                }
                let c = string[s];
                let mut matched = false;
                loop {
                    let left = pattern.len().saturating_sub(p);
                    if at(pattern, p) == b'\\' && left >= 2 {
                        p += 1;
                        matched |= pattern[p] == c;
                    } else if at(pattern, p) == b']' {
                        break;
                    } else if left == 0 {
                        // An unclosed class ends with the pattern; step back
                        // so the common `p += 1` below lands on the end.
                        p -= 1;
                        break;
                    } else if left >= 3 && pattern[p + 1] == b'-' {
                        // C compares `char`s, which are signed.
                        let (mut start, mut end) = (pattern[p] as i8, pattern[p + 2] as i8);
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        p += 2;
                        matched |= (start..=end).contains(&(c as i8));
                    } else {
                        matched |= pattern[p] == c;
                    }
                    p += 1;
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                s += 1;
            }
            b'\\' => {
                if pattern.len() - p >= 2 {
                    p += 1;
                }
                if pattern[p] != string[s] {
                    return false;
                }
                s += 1;
            }
            other => {
                if other != string[s] {
                    return false;
                }
                s += 1;
            }
        }
        p += 1;
        if s == string.len() {
            while at(pattern, p) == b'*' {
                p += 1;
            }
            break;
        }
    }
    p >= pattern.len() && s == string.len()
}

#[cfg(test)]
mod tests {
    use super::matches;

    fn m(p: &str, k: &str) -> bool {
        matches(p.as_bytes(), k.as_bytes())
    }

    #[test]
    fn star_matches_any_run() {
        assert!(
            !m("*", ""),
            "as in Redis: the ACL treats `~*` as all keys instead"
        );
        assert!(m("*", "anything"));
        assert!(m("cache:*", "cache:"));
        assert!(m("cache:*", "cache:1:2"));
        assert!(!m("cache:*", "cach"));
        assert!(!m("cache:*", "secret"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("a**", "a"));
    }

    #[test]
    fn question_mark_matches_one_byte() {
        assert!(m("k?", "k1"));
        assert!(!m("k?", "k"));
        assert!(!m("k?", "k12"));
    }

    #[test]
    fn classes_ranges_and_negation() {
        assert!(m("k[abc]", "kb"));
        assert!(!m("k[abc]", "kd"));
        assert!(m("k[a-c]", "kc"));
        assert!(
            m("k[c-a]", "kb"),
            "a reversed range is swapped, as in Redis"
        );
        assert!(m("k[^a-c]", "kd"));
        assert!(!m("k[^a-c]", "ka"));
        assert!(m("k[\\]]", "k]"));
    }

    #[test]
    fn an_unclosed_class_ends_at_the_pattern_end() {
        assert!(m("k[ab", "ka"));
        assert!(!m("k[ab", "kc"));
    }

    #[test]
    fn backslash_escapes_the_next_byte() {
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("a\\?", "a?"));
        assert!(!m("a\\?", "ab"));
    }

    #[test]
    fn empty_pattern_matches_only_the_empty_key() {
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(!m("a", ""));
    }
}
