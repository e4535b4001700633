//! The test's herdtools7-style `Hash=`.

use crate::ast::{Observable, Test};
use abi::litmus::LocKind;
use md5::{Digest, Md5};

/// The test's `Hash=`, built the way herdtools7 builds it
/// (`lib/testHash.ml`, `digest`): the hex MD5 of the concatenated raw MD5s
/// of the metadata (none for us: empty, as herd's when no digested key is
/// given), the initial state, the code and the observed locations. As in
/// herd, the condition is left out, so a test whose condition alone changes
/// (herd's `recond7`) keeps its hash, and so do renamed, re-commented or
/// reformatted copies. Each part is our own normal form in herd's layout:
///
/// * init: `TYPE NAME=VALUE` sorted by name, joined by `"; "` (herd's
///   `digest_init`), TYPE being our location kind (`page-rw`,
///   `shared-page-ro`, `unmapped`, `var`, with `@0x…` for a pinned VA);
/// * code: one column per thread (vCPU threads, then devices), the first
///   row the thread kinds, then one canonical statement per cell, cells
///   `" %-W "` joined by `|`, each row ended by `";\n"` (herd's
///   `Misc.string_of_prog`);
/// * observed: the observed list in herd spelling (`2:r1`, `x`), sorted,
///   joined by `"; "` (herd's `digest_observed`).
///
/// The value cannot equal herd's for any herd test (our code is not
/// assembly); what carries over is what the hash is for: two logs with
/// one hash ran the same program from the same state.
pub fn test_hash(t: &Test) -> String {
    let md5 = |s: &str| -> [u8; 16] { Md5::digest(s.as_bytes()).into() };
    // Init.
    let mut init: Vec<(String, String)> = t
        .locations
        .iter()
        .map(|l| {
            let mut ty = match l.kind {
                LocKind::Page => format!("{}page-{}", if l.shared { "shared-" } else { "" }, l.perm.name()),
                other => other.name().to_string(),
            };
            if let Some(va) = l.va {
                ty += &format!("@{va:#x}");
            }
            (l.name.clone(), format!("{ty} {}={}", l.name, l.init))
        })
        .collect();
    init.sort();
    let init: Vec<String> = init.into_iter().map(|(_, s)| s).collect();
    // Code, in herd's column layout.
    let columns: Vec<Vec<String>> = t
        .threads
        .iter()
        .map(|th| {
            let mut col = vec![th.kind.name().to_string()];
            col.extend(th.code.iter().map(|st| st.to_string().split_whitespace().collect::<Vec<_>>().join(" ")));
            col
        })
        .collect();
    let widths: Vec<usize> = columns.iter().map(|c| c.iter().map(|s| s.len()).max().unwrap_or(0)).collect();
    let rows = columns.iter().map(|c| c.len()).max().unwrap_or(0);
    let mut code = String::new();
    for row in 0..rows {
        let cells: Vec<String> = columns
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!(" {:<w$} ", c.get(row).map_or("", |s| s.as_str()), w = *w))
            .collect();
        code += &cells.join("|");
        code += ";\n";
    }
    // Observed locations.
    let mut observed: Vec<String> = t
        .observed
        .iter()
        .map(|o| match o {
            Observable::Reg { .. } => o.herd_name(t),
            Observable::Loc { loc } => t.locations[*loc].name.clone(),
        })
        .collect();
    observed.sort();
    let mut all = Vec::with_capacity(48);
    all.extend_from_slice(&md5(&init.join("; ")));
    all.extend_from_slice(&md5(&code));
    all.extend_from_slice(&md5(&observed.join("; ")));
    let d = Md5::digest(&all);
    d.iter().map(|b| format!("{b:02x}")).collect()
}
