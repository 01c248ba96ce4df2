//! A depth check before Cedar parses a file.
//!
//! Cedar's parsers build a tree without recursing, but everything after
//! them recurses over it: the conversion to Cedar's AST once or more per
//! bracket or `if`, and dropping, cloning, validating and evaluating the
//! AST once per node along a path of the tree (chains like `a || b || c`
//! and `x.a.b.c` become trees as deep as they are long). Deep enough, any of
//! them overflows its thread's stack, and that aborts the process: no
//! error, no last good bundle. This pass refuses such text before a parser
//! sees it. It reads tokens only, never builds a tree, and is linear in the
//! file's length.
//!
//! The limits come from the smallest stack that runs Cedar: the component's
//! guest, whose shadow stack is 256 KiB. Measured there:
//! - the conversion costs about 10 KiB per bracket, and traps past 23
//!   nested brackets: nesting (brackets, and `if`) is at most
//!   [`MAX_NESTING`];
//! - evaluation costs about 3.6 KiB per node of the AST (an `&&` over
//!   anything but literals included), and traps past about 70 nodes along
//!   a path: the expression's depth is at most [`MAX_OPERATOR_DEPTH`].
//!
//! The depth is an upper bound on the number of AST nodes along any path,
//! whatever the precedence and associativity. A bracket's comma-separated
//! parts are siblings and do not add up. Within a part, `&&`, `||`, `if`
//! and the `when` and `unless` clauses (which Cedar joins with `&&`) link
//! terms; every other operator, `.` access, call and index belongs to its
//! term. Below such an operator, up to the next bracket, there are only
//! operators of its own term (precedence puts the links above them), so a
//! path meets every link of its part but the operators of one term only:
//! a part is as deep as its links plus its deepest term.

use crate::bundle::BundleFile;
use crate::diagnostic::Diagnostic;

/// The deepest nesting of brackets and `if` expressions accepted in a
/// bundle file. The shipped policies stay under seven.
pub const MAX_NESTING: usize = 16;

/// The most operators (`&&` and `||` included), `.` accesses, calls,
/// indexes, brackets, and `when` or `unless` clauses accepted along one path
/// of a policy's expression. The shipped policies stay under twenty.
pub const MAX_OPERATOR_DEPTH: usize = 48;

/// Refuses a file past one of the limits above, naming the place.
pub(crate) fn check(file: &BundleFile) -> Result<(), Diagnostic> {
    Scanner::new(file).run()
}

/// Which grammar a file is read with: what brackets and operators are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syntax {
    /// Cedar policies: brackets, `if`, and operators.
    Policy,
    /// Cedar schemas: brackets, including `Set<...>`.
    Schema,
    /// JSON: brackets only.
    Json,
}

impl Syntax {
    fn of(path: &str) -> Self {
        if path.ends_with(".cedar") {
            Self::Policy
        } else if path.ends_with(".cedarschema") {
            Self::Schema
        } else {
            Self::Json
        }
    }
}

/// One open bracket, or the statement around them all.
#[derive(Debug, Default)]
struct Frame {
    /// The depth the enclosing brackets add, this one included: fixed while
    /// it is open.
    prefix: usize,
    /// `if` keywords in the current part, for the nesting.
    ifs: usize,
    /// Links in the current part.
    links: usize,
    /// Operators in the current term.
    term: usize,
    /// The deepest closed bracket in the current term.
    term_inner: usize,
    /// The deepest term of the current part already finished.
    deepest_term: usize,
    /// The deepest part already finished by a comma.
    deepest_part: usize,
    /// Whether the term is in the attribute path after `has`: Cedar expands
    /// `e has a.b` into `e has a && e.a has b`, two levels per `.`.
    in_has_path: bool,
}

impl Frame {
    /// The depth of the current part.
    fn part_depth(&self) -> usize {
        self.links + self.deepest_term.max(self.term + self.term_inner)
    }

    /// The depth of a closed bracket, the bracket included.
    fn closed_depth(&self) -> usize {
        1 + self.deepest_part.max(self.part_depth())
    }
}

/// Keywords that build a node around what precedes them.
const OPERATOR_KEYWORDS: &[&[u8]] = &[b"in", b"has", b"like", b"is"];

/// A policy's clauses, which Cedar joins into one `&&` chain.
const CLAUSE_KEYWORDS: &[&[u8]] = &[b"when", b"unless"];

/// Keywords after which a bracket opens a new expression rather than
/// calling or indexing the one before.
const NEUTRAL_KEYWORDS: &[&[u8]] = &[b"then", b"else"];

/// Two-byte operators, counted once.
const TWO_BYTE_OPERATORS: &[&[u8]] = &[b"||", b"&&", b"==", b"!=", b"<=", b">="];

struct Scanner<'a> {
    file: &'a BundleFile,
    text: &'a [u8],
    syntax: Syntax,
    /// The open brackets; the first is the statement, never closed.
    frames: Vec<Frame>,
    /// Brackets and `if`s along the current path.
    nesting: usize,
    /// Whether the last token ends an operand, so that `(` or `[` after it
    /// calls or indexes that operand: one more level around it.
    after_operand: bool,
}

impl<'a> Scanner<'a> {
    fn new(file: &'a BundleFile) -> Self {
        Self {
            file,
            text: file.contents.as_bytes(),
            syntax: Syntax::of(&file.path),
            frames: vec![Frame::default()],
            nesting: 0,
            after_operand: false,
        }
    }

    fn run(mut self) -> Result<(), Diagnostic> {
        let mut index = 0;
        while let Some(&byte) = self.text.get(index) {
            let start = index;
            index += 1;
            let mut operand = false;
            match byte {
                b'"' => {
                    index = skip_string(self.text, index);
                    operand = true;
                }
                b'/' if self.text.get(index) == Some(&b'/') => {
                    index = line_end(self.text, index);
                    // A comment leaves the previous token's role unchanged.
                    operand = self.after_operand;
                }
                b'(' | b'[' | b'{' => self.open(start, byte != b'{')?,
                b'<' if self.syntax == Syntax::Schema => self.open(start, false)?,
                b')' | b']' | b'}' => {
                    self.close(start)?;
                    operand = true;
                }
                b'>' if self.syntax == Syntax::Schema => {
                    self.close(start)?;
                    operand = true;
                }
                b',' => self.next_part(),
                b';' if self.syntax == Syntax::Policy => self.next_statement(),
                _ if byte.is_ascii_whitespace() => operand = self.after_operand,
                _ if self.syntax != Syntax::Policy => operand = true,
                _ if byte.is_ascii_alphabetic() || byte == b'_' => {
                    index = word_end(self.text, index);
                    let word = self.text.get(start..index).unwrap_or_default();
                    if word == b"if" {
                        self.enter_if(start)?;
                    } else if CLAUSE_KEYWORDS.contains(&word) {
                        self.link(start, word.len())?;
                    } else if OPERATOR_KEYWORDS.contains(&word) {
                        self.operator(start, word.len(), 1)?;
                        if let Some(frame) = self.frames.last_mut() {
                            frame.in_has_path = word == b"has";
                        }
                    } else {
                        operand = !NEUTRAL_KEYWORDS.contains(&word);
                    }
                }
                _ if byte.is_ascii_digit() || byte == b'?' => {
                    index = word_end(self.text, index);
                    operand = true;
                }
                b'|' | b'&' | b'=' | b'!' | b'<' | b'>' | b'+' | b'-' | b'*' | b'/' | b'%'
                | b'.' => {
                    let pair = self.text.get(start..start + 2).unwrap_or_default();
                    if TWO_BYTE_OPERATORS.contains(&pair) {
                        index += 1;
                    }
                    if pair == b"&&" || pair == b"||" {
                        self.link(start, 2)?;
                    } else {
                        let in_has_path = byte == b'.'
                            && self.frames.last().is_some_and(|frame| frame.in_has_path);
                        self.operator(start, index - start, if in_has_path { 2 } else { 1 })?;
                        if let Some(frame) = self.frames.last_mut() {
                            frame.in_has_path = in_has_path;
                        }
                    }
                }
                // `:`, `::`, `@`: what follows starts an operand.
                b':' | b'@' => {}
                // Anything else is a syntax error for Cedar; assume the worst
                // of a bracket after it.
                _ => operand = true,
            }
            self.after_operand = operand;
        }
        Ok(())
    }

    fn open(&mut self, at: usize, may_call: bool) -> Result<(), Diagnostic> {
        // At the statement's level, `id(...)` and `permit(...)` are syntax,
        // not calls.
        if may_call && self.after_operand && self.frames.len() > 1 {
            self.operator(at, 1, 1)?;
        }
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(self.too_nested(at, 1));
        }
        let prefix = self
            .frames
            .last()
            .map_or(1, |parent| parent.prefix + parent.links + parent.term + 1);
        self.frames.push(Frame {
            prefix,
            ..Frame::default()
        });
        Ok(())
    }

    fn close(&mut self, at: usize) -> Result<(), Diagnostic> {
        // A stray closer is Cedar's syntax error to report, not a level.
        if self.frames.len() < 2 {
            return Ok(());
        }
        let Some(closed) = self.frames.pop() else {
            return Ok(());
        };
        self.nesting = self.nesting.saturating_sub(1 + closed.ifs);
        if let Some(parent) = self.frames.last_mut() {
            parent.term_inner = parent.term_inner.max(closed.closed_depth());
            parent.in_has_path = false;
        }
        self.check(at, 1)
    }

    fn enter_if(&mut self, at: usize) -> Result<(), Diagnostic> {
        if let Some(frame) = self.frames.last_mut() {
            frame.ifs += 1;
        }
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(self.too_nested(at, 2));
        }
        self.link(at, 2)
    }

    /// `&&`, `||`, `if`, or a clause: one more link, and a new term.
    fn link(&mut self, at: usize, length: usize) -> Result<(), Diagnostic> {
        if let Some(frame) = self.frames.last_mut() {
            frame.links += 1;
            frame.deepest_term = frame.deepest_term.max(frame.term + frame.term_inner);
            frame.term = 0;
            frame.term_inner = 0;
            frame.in_has_path = false;
        }
        self.check(at, length)
    }

    fn operator(&mut self, at: usize, length: usize, levels: usize) -> Result<(), Diagnostic> {
        if let Some(frame) = self.frames.last_mut() {
            frame.term += levels;
            frame.in_has_path = false;
        }
        self.check(at, length)
    }

    fn next_part(&mut self) {
        if let Some(frame) = self.frames.last_mut() {
            self.nesting = self.nesting.saturating_sub(frame.ifs);
            *frame = Frame {
                prefix: frame.prefix,
                deepest_part: frame.deepest_part.max(frame.part_depth()),
                ..Frame::default()
            };
        }
    }

    fn next_statement(&mut self) {
        self.frames.clear();
        self.frames.push(Frame::default());
        self.nesting = 0;
    }

    /// Checks the innermost frame's current part, with what its enclosing
    /// frames add. Frames above it do not change until it closes, so
    /// checking here at every change catches every excess.
    fn check(&self, at: usize, length: usize) -> Result<(), Diagnostic> {
        let depth = self
            .frames
            .last()
            .map_or(0, |frame| frame.prefix + frame.part_depth());
        if depth > MAX_OPERATOR_DEPTH {
            return Err(self.refuse(
                at,
                length,
                format!("expression nested more than {MAX_OPERATOR_DEPTH} operators deep"),
                "every operator (`&&` and `||` too), `.` access, call, index, bracket and \
                 `when` or `unless` clause along a path of the expression adds a level; test a \
                 set with `.contains()` instead of chaining `||`, or split the policy",
            ));
        }
        Ok(())
    }

    fn too_nested(&self, at: usize, length: usize) -> Diagnostic {
        self.refuse(
            at,
            length,
            format!("nested more than {MAX_NESTING} levels deep"),
            "brackets and `if` expressions each add a level; split the expression, or name \
             parts of it with entity attributes",
        )
    }

    fn refuse(&self, at: usize, length: usize, message: String, help: &str) -> Diagnostic {
        let mut diagnostic = Diagnostic::in_file(&self.file.path, message);
        diagnostic.help = Some(help.to_owned());
        diagnostic.place(&self.file.contents, at, length);
        diagnostic
    }
}

/// The index just past a string literal's closing quote (or the end).
fn skip_string(text: &[u8], mut index: usize) -> usize {
    while let Some(&byte) = text.get(index) {
        match byte {
            b'\\' => index += 2,
            b'"' => return index + 1,
            _ => index += 1,
        }
    }
    text.len()
}

/// The index of the end of the line (or of the text).
fn line_end(text: &[u8], index: usize) -> usize {
    text.iter()
        .skip(index)
        .position(|&byte| byte == b'\n' || byte == b'\r')
        .map_or(text.len(), |offset| index + offset)
}

/// The index just past an identifier, number or slot.
fn word_end(text: &[u8], index: usize) -> usize {
    text.iter()
        .skip(index)
        .position(|&byte| !(byte.is_ascii_alphanumeric() || byte == b'_'))
        .map_or(text.len(), |offset| index + offset)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn file(path: &str, contents: String) -> BundleFile {
        BundleFile {
            path: path.to_owned(),
            contents,
        }
    }

    fn policy(condition: &str) -> BundleFile {
        file(
            "deep.cedar",
            format!("permit(principal, action, resource)\nwhen {{\n  {condition}\n}};\n"),
        )
    }

    fn refused(text: &str) -> Diagnostic {
        check(&policy(text)).expect_err(text.get(..60).unwrap_or(text))
    }

    #[test]
    fn deep_brackets_are_refused_with_their_place() {
        let deep = refused(&format!("{}true{}", "(".repeat(150), ")".repeat(150)));
        // `when {` is the first level, so the 16th parenthesis is one too many.
        assert_eq!((deep.line, deep.column), (3, 3 + 15), "{deep:?}");
        assert!(deep.message.contains("16 levels"), "{deep:?}");
        let at_the_limit = format!("{}true{}", "(".repeat(15), ")".repeat(15));
        assert!(check(&policy(&at_the_limit)).is_ok());
        let ifs = refused(&("if true then ".repeat(100) + "true" + &" else false".repeat(100)));
        assert!(ifs.message.contains("16 levels"), "{ifs:?}");
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        let quoted = policy(&format!(
            "\"{}\" == \"\\\"(\" // {}",
            "(".repeat(500),
            "[".repeat(500)
        ));
        assert!(check(&quoted).is_ok(), "{:?}", check(&quoted));
    }

    #[test]
    fn operators_count_whatever_their_precedence() {
        for chain in [
            "!".repeat(10_000) + "true",
            "- ".repeat(10_000) + "1",
            vec!["1"; 60].join(" + ") + " > 1",
            vec!["1"; 60].join(" * ") + " > 1",
            "context".to_owned() + &".a".repeat(60),
            "context".to_owned() + &"[\"a\"]".repeat(60),
            "[1]".to_owned() + &".contains(1)".repeat(30),
            // Two levels per `.`: Cedar expands the path.
            "context has a".to_owned() + &".a".repeat(30),
            vec!["1 > 0"; 60].join(" && "),
            vec!["1 > 0"; 60].join(" || "),
        ] {
            let deep = refused(&chain);
            assert_eq!(deep.line, 3, "{deep:?}");
            assert!(deep.message.contains("48 operators"), "{deep:?}");
        }
        let clauses = format!(
            "permit(principal, action, resource){};",
            "\nwhen { true }".repeat(60)
        );
        assert!(check(&file("clauses.cedar", clauses)).is_err());
        // The limit itself: the clause and `when {` are two levels.
        let at_the_limit = |ones: usize| vec!["1"; ones].join(" + ") + " > 1";
        assert!(check(&policy(&at_the_limit(46))).is_ok());
        assert!(check(&policy(&at_the_limit(47))).is_err());
    }

    #[test]
    fn alternatives_are_side_by_side() {
        // Forty alternatives of four operators each: the links add up, the
        // alternatives do not.
        let alternatives = vec!["context.a.b.c == 1"; 40].join(" || ");
        assert!(check(&policy(&alternatives)).is_ok());
    }

    #[test]
    fn operators_around_a_deep_bracket_add_to_its_depth() {
        // Left-associative: the bracket ends up at the bottom of the chain.
        let nested = format!("{}1{}", "(".repeat(10), ")".repeat(10));
        let chained = |links: usize| format!("{nested}{} > 0", " + 1".repeat(links));
        // The clause and `when {` 2, brackets 10, `+` links, `>` 1.
        assert!(check(&policy(&chained(35))).is_ok());
        assert!(check(&policy(&chained(36))).is_err());
        let inner_chain = format!("({})", vec!["true"; 30].join(" || "));
        let outer = format!("{inner_chain}{}", " && true".repeat(30));
        assert!(check(&policy(&outer)).is_err());
    }

    #[test]
    fn siblings_do_not_add_up() {
        let element = format!("[{}]", vec!["1"; 20].join(" + "));
        let many = vec![element.as_str(); 1000].join(", ");
        assert!(check(&policy(&format!("[{many}].isEmpty()"))).is_ok());
        let statements = policy(&vec!["1"; 20].join(" + ")).contents.repeat(1000);
        assert!(check(&file("many.cedar", statements)).is_ok());
    }

    #[test]
    fn schemas_count_set_brackets_and_json_counts_brackets() {
        let schema = format!(
            "entity A {{ deep: {}Long{} }};",
            "Set<".repeat(20),
            ">".repeat(20)
        );
        assert!(check(&file("s.cedarschema", schema)).is_err());
        let json = format!("{}1{}", "[".repeat(20), "]".repeat(20));
        assert!(check(&file("entities.json", json)).is_err());
        // JSON has no operators to count.
        let flat = format!("[{}]", vec!["\"a.b\" ,1"; 1000].join(","));
        assert!(check(&file("entities.json", flat)).is_ok());
    }

    #[test]
    fn the_shipped_bundles_pass() {
        let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
        for name in ["airflow-gitlab", "gateway", "gitlab-ci-oauth", "looker"] {
            let source = crate::BundleSource::from_dir(&policies.join(name)).unwrap();
            assert!(source.check_nesting().is_ok(), "{name}");
        }
    }
}
