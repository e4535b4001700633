use super::*;
use crate::ast::Verdict;

pub(crate) const EXAMPLE: &str = r#"name = "madv-dontneed-concurrent"
doc  = "Two zaps of one page; the second sees pte_none and skips its flush."

[locations]
x = { page = "rw", value = 1 }   # a page of the test mm; first word = 1

[thread.P0]
code = """
wait warm
madvise x dontneed at after_ptl_release { signal s1; wait s2 }
"""

[thread.P1]
code = """
wait s1
madvise x dontneed
signal done
wait read
signal s2
"""

[thread.P2]
code = """
load x -> r0          # warm this vCPU's TLB first
signal warm
wait done
load x -> r1          # after P1's madvise returned
signal read
"""

[final]
observe   = ["P2:r0", "P2:r1"]
forbidden = "P2:r1 == 1"

[expect]
"flush=pending"                         = "never"
"flush=pending,madv-nested-check=off"   = "sometimes"
"#;

fn errors(src: &str) -> Vec<Diagnostic> {
    let r = check_source("t.toml", src);
    assert!(r.test.is_none(), "expected errors");
    r.diagnostics.into_iter().filter(|d| d.is_error()).collect()
}

#[test]
fn example_checks() {
    let r = check_source("ex.toml", EXAMPLE);
    assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
    let t = r.test.unwrap();
    assert_eq!(t.name, "madv-dontneed-concurrent");
    assert_eq!(t.threads.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["P0", "P1", "P2"]);
    let names: Vec<&str> = t.locations.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["x", "warm", "s1", "s2", "done", "read"]);
    assert!(t.locations[1].implicit);
    assert_eq!(t.observed.len(), 2);
    assert_eq!(t.condition.expr.herd(&t), "2:r1=1");
    assert_eq!(t.expect.len(), 2);
    assert_eq!(t.expect[1].verdict, Verdict::Sometimes);
    assert_eq!(t.hash.len(), 32);
    assert_eq!(t.threads[0].code[1].line, 10);
    // Comments and spacing do not change the hash; code does.
    let t2 = check_source("b", &EXAMPLE.replace("# a page of the test mm; first word = 1", "")).test.unwrap();
    assert_eq!(t.hash, t2.hash);
    let t3 = check_source("c", &EXAMPLE.replace("load x -> r1 ", "load x -> r2\nload x -> r1")).test.unwrap();
    assert_ne!(t.hash, t3.hash);
    // As in herdtools7 (lib/testHash.ml), the condition is not hashed:
    // a re-conditioned test keeps its hash; the observed list is.
    let t4 = check_source("d", &EXAMPLE.replace("forbidden = \"P2:r1 == 1\"", "forbidden = \"P2:r1 == 0\""));
    assert_eq!(t.hash, t4.test.unwrap().hash);
    let t5 = check_source("e", &EXAMPLE.replace("forbidden = \"P2:r1 == 1\"", "forbidden = \"P2:r1 == 0 && x == 1\""));
    assert_ne!(t.hash, t5.test.unwrap().hash);
}

#[test]
fn unknown_op_in_third_code_line() {
    let src = EXAMPLE.replace("wait done\nload x -> r1", "wait done\nlaod x -> r1");
    let d = errors(&src);
    // Line 27 of the file is the 4th line of P2's code block.
    assert_eq!(d[0].headline(), "t.toml:27:1: error: unknown operation `laod`");
    assert!(d[0].notes[0].starts_with("valid operations in a vCPU thread: load, store"));
    // P2:r1 is then written by no one: reported too (all errors at once).
    assert!(d.iter().any(|e| e.message.contains("never writes r1")), "{d:?}");
}

#[test]
fn bad_hook_position() {
    let src = EXAMPLE.replace("at after_ptl_release", "at after_ptl_unlock");
    let d = errors(&src);
    assert_eq!(d[0].headline(), "t.toml:10:23: error: unknown hook `after_ptl_unlock`");
    assert!(d[0].notes[0].contains("after_ptl_release"));
}

#[test]
fn bad_policy_key_lists_valid_ones() {
    let src = EXAMPLE.replace("\"flush=pending,madv-nested-check=off\"", "\"flush=pending,madv-nested=off\"");
    let d = errors(&src);
    let line = src.lines().position(|l| l.contains("madv-nested=off")).unwrap() as u32 + 1;
    assert_eq!(d[0].line, line);
    assert_eq!(d[0].col, 16);
    assert_eq!(d[0].message, "in [expect] policy: unknown policy key `madv-nested`");
    assert!(d[0].notes[0].contains("madv-nested-check"));
    let src = EXAMPLE.replace("= \"sometimes\"", "= \"often\"");
    let d = errors(&src);
    assert_eq!(d[0].message, "invalid verdict \"often\"");
}

#[test]
fn bad_toml_has_position() {
    let d = errors("name = \"x\"\n[locations]\nx = { page = \"rw\" \n");
    assert_eq!(d[0].line, 3);
    assert!(d[0].message.starts_with("invalid TOML"), "{}", d[0]);
    let d = errors("name = \"x\"\nnmae = 1\n");
    assert_eq!((d[0].line, d[0].col), (2, 1));
    assert!(d[0].message.contains("unknown field `nmae`"), "{}", d[0]);
}

#[test]
fn semantic_errors() {
    let base = "name = \"t\"\n[locations]\nx = { page = \"rw\" }\nf = { var = 0 }\n";
    let d = errors(&format!(
            "{base}[thread.P0]\ncode = \"load y -> r0\\nmunmap f\\nwait x\"\n[final]\nforbidden = \"P0:r0 == 1\"\nexists = \"P0:r0 == 1\"\n"
        ));
    let msgs: Vec<&str> = d.iter().map(|d| d.message.as_str()).collect();
    assert!(msgs.contains(&"undeclared location `y`"), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.starts_with("`munmap` needs a page location")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.starts_with("`wait` needs a flag")), "{msgs:?}");
    assert!(msgs.contains(&"give either `forbidden` or `exists`, not both"), "{msgs:?}");
    // Positions inside a basic string with escapes: `munmap` is on file line 6.
    let m = d.iter().find(|d| d.message.starts_with("`munmap`")).unwrap();
    assert_eq!((m.line, m.col), (6, 30));
    let d = errors(&format!(
        "{base}[thread.P0]\ncode = \"load x -> r0\"\n[final]\nforbidden = \"P1:r0 == 1 && P0:r3 == 0\"\n"
    ));
    assert!(d[0].message.starts_with("unknown thread `P1`"));
    assert!(d[1].message.contains("never writes r3"));
    let d = errors(&format!("{base}[thread.P0]\ncode = \"load x -> r0\"\n"));
    assert!(d[0].message.starts_with("missing [final]"));
    let d = errors("name = \"t\"\n[locations]\nx = { page = \"rx\" }\nr1 = { var = 1 }\n[thread.P0]\ncode = \"mfence\"\n[final]\nexists = \"true\"\n");
    assert_eq!(d[0].notes[0], "expected one of: rw, ro, none, unmapped");
    assert!(d[1].message.contains("looks like a register"));
}

/// Entries are compared by the policy they resolve to: `default` is
/// `flush=pending`, and an entry without `tlb` overlaps `tlb=lazy`.
#[test]
fn contradictory_expectations_resolving_to_one_policy() {
    let with = |expect: &str| EXAMPLE.split("[expect]").next().unwrap().to_string() + "[expect]\n" + expect;
    let d = errors(&with("\"flush=pending\" = \"never\"\n\"default\" = \"sometimes\"\n"));
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].message.contains("`default` = \"sometimes\" contradicts `flush=pending` = \"never\""), "{}", d[0]);
    let line = EXAMPLE.split("[expect]").next().unwrap().lines().count() as u32 + 3;
    assert_eq!((d[0].line, d[0].col), (line, 1), "{}", d[0]);
    assert!(d[0].notes[0].starts_with("both mean: "), "{:?}", d[0].notes);
    let d = errors(&with(
        "\"flush=pending,madv-nested-check=off\" = \"sometimes\"\n\"madv-nested-check=off,tlb=lazy\" = \"never\"\n",
    ));
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].message.contains("contradicts"), "{}", d[0]);
    let d = errors(&with("\"kernel=v4.19\" = \"never\"\n\"kernel=v4.19,tlb=lazy\" = \"never\"\n"));
    assert!(d[0].message.contains("is the same policy as"), "{}", d[0]);
    // Different cache models named on both sides are different rows.
    let ok = check_source("t.toml", &with("\"tlb=lazy\" = \"never\"\n\"tlb=evict:0.5\" = \"sometimes\"\n"));
    assert!(ok.test.is_some(), "{:?}", ok.diagnostics);
}

#[test]
fn all_errors_of_a_file_at_once() {
    let src = EXAMPLE
        .replace("forbidden = \"P2:r1 == 1\"", "forbidden = \"P3:r1 == 1\"")
        .replace("\"flush=pending\" ", "\"flush=pendin\" ")
        .replace("x = { page = \"rw\", value = 1 }", "x = { page = \"rx\", value = 1 }");
    let d = errors(&src);
    let msgs: Vec<&str> = d.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(d.len(), 3, "{msgs:?}");
    assert!(msgs[0].starts_with("invalid page permission"));
    assert!(msgs[1].starts_with("unknown thread `P3`"));
    assert!(msgs[2].starts_with("in [expect] policy: invalid value `pendin`"));
}

#[test]
fn positions_in_literal_and_crlf_and_continued_strings() {
    let lit = "name = 't'\n[locations]\nx = { page = 'rw' }\n[thread.P0]\ncode = '''\nload x -> r0\n  lod x\n'''\n[final]\nexists = 'P0:r0 == 0'\n";
    let d = errors(lit);
    assert_eq!((d[0].line, d[0].col), (7, 3), "{}", d[0]);
    let crlf = lit.replace('\n', "\r\n");
    let d = errors(&crlf);
    assert_eq!((d[0].line, d[0].col), (7, 3), "{}", d[0]);
    let cont = "name = \"t\"\n[locations]\nx = { page = \"rw\" }\n[thread.P0]\ncode = \"\"\"\nload x -> r0; \\\n   lod x\n\"\"\"\n[final]\nexists = \"P0:r0 == 0\"\n";
    let d = errors(cont);
    assert_eq!((d[0].line, d[0].col), (7, 4), "{}", d[0]);
}

#[test]
fn warnings_do_not_block() {
    let src = "name = \"t\"\n[locations]\nx = { page = \"rw\" }\n[thread.P0]\ncode = \"wait never_set\\nstore x r5\\nload x -> r0\"\n[final]\nexists = \"P0:r0 == 0 && x == fault\"\n";
    let r = check_source("w.toml", src);
    let t = r.test.expect("warnings only");
    assert_eq!(r.diagnostics.len(), 2, "{:?}", r.diagnostics);
    assert!(r.diagnostics.iter().all(|d| !d.is_error()));
    assert!(r.diagnostics[0].message.contains("no thread signals"));
    assert!(r.diagnostics[1].message.contains("never writes"));
    // x was added to the observed list by the condition.
    assert_eq!(t.observed.len(), 2);
    assert_eq!(t.condition.expr.herd(&t), "0:r0=0 /\\ [x]=FAULT");
}
