//! Loops unrolled in the WGSL text before it is compiled, so that per-invocation registers can
//! be named variables rather than arrays: some drivers (NVIDIA's, 580) keep a private array in
//! local memory whenever it is indexed in a loop, even one of constant trip count, and the
//! loop is unrolled only after that decision.
//!
//! A template loop is a line `//#for NAME in COUNT {` (COUNT a number or one of the variant's
//! header constants), its body, and a line `//#}`. The body is written COUNT times, with
//! `{NAME}` replaced by 0, 1, ... in each copy; loops nest. The body is copied as it is, so a
//! body that declares `let`s wraps them in braces of its own; one that declares variables
//! meant to outlive the loop (`var acc_{x} = ...;`) does not.

/// `src` with every template loop unrolled; `constants` resolve the counts.
///
/// Panics on a malformed template (an unknown count or an unclosed loop): the templates are
/// the crate's own shaders, and the shader tests render every variant.
pub(crate) fn unroll(src: &str, constants: &[(&str, u32)]) -> String {
    let lines: Vec<&str> = src.lines().collect();
    let mut out = String::with_capacity(src.len() * 2);
    let mut i = 0;
    while i < lines.len() {
        i = expand(&lines, i, constants, &[], &mut out);
    }
    out
}

/// Writes line `i` (or the loop it opens, whole) with `bound`'s substitutions; returns the
/// index of the next line.
fn expand(lines: &[&str], i: usize, constants: &[(&str, u32)], bound: &[(String, u32)], out: &mut String) -> usize {
    let Some((name, count)) = loop_header(lines[i]) else {
        let mut line = lines[i].to_string();
        for (n, v) in bound {
            line = line.replace(&format!("{{{n}}}"), &v.to_string());
        }
        out.push_str(&line);
        out.push('\n');
        return i + 1;
    };
    let count = count.parse::<u32>().ok().or_else(|| constants.iter().find(|(c, _)| *c == count).map(|&(_, v)| v));
    let count = count.unwrap_or_else(|| panic!("template loop over an unknown count: {}", lines[i].trim()));
    let end = closing(lines, i);
    for v in 0..count {
        let mut inner = bound.to_vec();
        inner.push((name.to_string(), v));
        let mut j = i + 1;
        while j < end {
            j = expand(lines, j, constants, &inner, out);
        }
    }
    end + 1
}

/// `(NAME, COUNT)` of a line `//#for NAME in COUNT {`.
fn loop_header(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim().strip_prefix("//#for ")?.strip_suffix('{')?;
    let (name, count) = rest.split_once(" in ")?;
    Some((name.trim(), count.trim()))
}

/// The index of the `//#}` that closes the loop opened at line `open`.
fn closing(lines: &[&str], open: usize) -> usize {
    let mut depth = 0;
    for (j, line) in lines.iter().enumerate().skip(open) {
        if loop_header(line).is_some() {
            depth += 1;
        } else if line.trim() == "//#}" {
            depth -= 1;
            if depth == 0 {
                return j;
            }
        }
    }
    panic!("template loop not closed: {}", lines[open].trim())
}

#[cfg(test)]
mod tests {
    use super::unroll;

    #[test]
    fn loops_unroll_nested_with_their_indices() {
        let src = "a\n  //#for x in KP {\n  //#for c in 3 {\n  v_{x}_{c} = {c}u;\n  //#}\n  w_{x}\n  //#}\nb\n";
        let got = unroll(src, &[("KP", 2)]);
        let want = "a\n  v_0_0 = 0u;\n  v_0_1 = 1u;\n  v_0_2 = 2u;\n  w_0\n  v_1_0 = 0u;\n  v_1_1 = 1u;\n  v_1_2 = 2u;\n  w_1\nb\n";
        assert_eq!(got, want);
    }

    #[test]
    fn a_loop_of_no_iterations_writes_nothing_and_text_without_loops_is_unchanged() {
        assert_eq!(unroll("x\n//#for i in N {\ny{i}\n//#}\nz\n", &[("N", 0)]), "x\nz\n");
        let plain = "fn f() {\n    // a comment {x}\n}\n";
        assert_eq!(unroll(plain, &[]), plain);
    }

    #[test]
    #[should_panic(expected = "unknown count")]
    fn an_unknown_count_is_a_template_error() {
        unroll("//#for i in NOPE {\n//#}\n", &[]);
    }
}
