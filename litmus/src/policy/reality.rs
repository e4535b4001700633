//! Whether a policy is a kernel that existed ([`Reality`]): each key's
//! value checked against the eras of the others and the table's requirements.

use super::Policy;
use abi::policy::{profile_abi, Key, KeyDesc, KeyKind, Profile, Release, Status, ValueDesc, KEYS, REQUIREMENTS};
use std::fmt;

/// Whether a policy is a kernel that existed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reality {
    /// A profile as it is.
    Profile(Profile),
    /// Every kernel key's value was upstream together in these releases
    /// (a profile, or a combination some release had).
    Kernel { releases: Vec<(Release, Release)> },
    /// The profile with one key's commit applied or reverted (a backport,
    /// or a bisection step): `key` went from the profile's value to the
    /// neighbouring value of the history.
    OneCommit { key: Key, profile: Profile, from: &'static str, to: &'static str },
    /// A real kernel (one of the above) with unmerged patches on top.
    Proposal { keys: Vec<Key>, base: Box<Reality> },
    /// No kernel ever had this combination; `reason` says why.
    Hypothetical { reason: String },
}

impl Reality {
    pub fn is_hypothetical(&self) -> bool {
        matches!(self, Reality::Hypothetical { .. })
    }
}

impl fmt::Display for Reality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reality::Profile(p) => write!(f, "the {} profile", p.name()),
            Reality::Kernel { releases } => {
                let r: Vec<String> = releases
                    .iter()
                    .map(|(a, b)| if b.same(Release::OPEN) { format!("{a}+") } else { format!("{a} to before {b}") })
                    .collect();
                write!(f, "a kernel that existed ({})", r.join(", "))
            }
            Reality::OneCommit { key, profile, from, to } => {
                write!(f, "{} with one commit applied or reverted ({}: {from} -> {to})", profile.name(), key.name())
            }
            Reality::Proposal { keys, base } => {
                let k: Vec<&str> = keys.iter().map(|k| k.name()).collect();
                write!(f, "proposal ({}) on {base}", k.join(", "))
            }
            Reality::Hypothetical { reason } => write!(f, "hypothetical: {reason}"),
        }
    }
}

/// Intersection of two sets of release intervals.
pub(super) fn intersect(a: &[(Release, Release)], b: &[(Release, Release)]) -> Vec<(Release, Release)> {
    let mut out = Vec::new();
    for &(s1, e1) in a {
        for &(s2, e2) in b {
            let s = s1.max(s2);
            let e = e1.min(e2);
            if s < e {
                out.push((s, e));
            }
        }
    }
    out
}

pub(super) fn eras_of(v: &ValueDesc) -> Vec<(Release, Release)> {
    match v.status {
        Status::Kernel(eras) => eras.iter().map(|e| (e.since, e.until)).collect(),
        _ => vec![],
    }
}

pub(super) fn describe(k: Key, v: &ValueDesc) -> String {
    let eras: Vec<String> = eras_of(v)
        .iter()
        .map(|(a, b)| match (a.same(Release::EPOCH), b.same(Release::OPEN)) {
            (true, true) => "every release".to_string(),
            (true, false) => format!("before {b}"),
            (false, true) => format!("{a}+"),
            (false, false) => format!("{a} to before {b}"),
        })
        .collect();
    format!("{}={} ({})", k.name(), v.name, eras.join(", "))
}

pub(super) fn reality(p: &Policy) -> Reality {
    let kernel_keys = || KEYS.iter().filter(|d| d.kind == KeyKind::Kernel);
    for d in kernel_keys() {
        let v = p.value(d.key);
        if v.status == Status::Model {
            return Reality::Hypothetical { reason: format!("{}={} is no kernel: {}", d.name, v.name, v.doc) };
        }
    }
    // A value that needs another key's value.
    for q in REQUIREMENTS {
        if p.abi.bytes[q.key as usize] == q.value && !q.needs_values.contains(&p.abi.bytes[q.needs as usize]) {
            return Reality::Hypothetical {
                reason: format!(
                    "{}={} without {} in {{{}}}: {}",
                    q.key.name(),
                    p.value(q.key).name,
                    q.needs.name(),
                    q.needs_values
                        .iter()
                        .filter_map(|&v| q.needs.desc().value(v))
                        .map(|v| v.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                    q.why
                ),
            };
        }
    }
    let mut proposals = Vec::new();
    for d in kernel_keys() {
        let v = p.value(d.key);
        if v.status == Status::Proposal && (v.num != d.default || p.is_explicit(d.key)) {
            proposals.push(d.key);
        }
    }
    // The real part: every kernel key that is not a proposal.
    let real = |d: &&KeyDesc| !proposals.contains(&d.key) && matches!(p.value(d.key).status, Status::Kernel(_));
    let prof_abi = profile_abi(p.kernel());
    let as_profile = kernel_keys().filter(real).all(|d| prof_abi.bytes[d.key as usize] == p.abi.bytes[d.key as usize]);
    let mut together = vec![(Release::EPOCH, Release::OPEN)];
    for d in kernel_keys().filter(real) {
        together = intersect(&together, &eras_of(p.value(d.key)));
    }
    let base = if as_profile {
        Reality::Profile(p.kernel())
    } else if !together.is_empty() {
        Reality::Kernel { releases: together }
    } else {
        // One commit on top of the profile.
        let prof = p.kernel();
        let base = profile_abi(prof);
        let changed: Vec<&KeyDesc> =
            kernel_keys().filter(real).filter(|d| base.bytes[d.key as usize] != p.abi.bytes[d.key as usize]).collect();
        let rel = prof.release();
        match changed.as_slice() {
            [d] => {
                let from = d.value(base.bytes[d.key as usize]).expect("profile values are valid");
                let to = p.value(d.key);
                // The era of the profile's value that contains its release,
                // and whether `to` borders it (the commit before or after).
                let here = eras_of(from).into_iter().find(|(a, b)| *a <= rel && rel < *b);
                let adjacent = here.is_some_and(|(a, b)| eras_of(to).iter().any(|(c, e)| *e == a || *c == b));
                if adjacent {
                    Reality::OneCommit { key: d.key, profile: prof, from: from.name, to: to.name }
                } else {
                    Reality::Hypothetical {
                        reason: format!(
                            "{} never co-existed with {}'s {}: more than one commit away",
                            describe(d.key, to),
                            prof.name(),
                            describe(d.key, from)
                        ),
                    }
                }
            }
            [] => Reality::Hypothetical { reason: "no release has these values".into() },
            many => {
                // Name a pair that never met, to make the reason concrete.
                let mut pair = None;
                'outer: for (i, a) in many.iter().enumerate() {
                    for b in kernel_keys().filter(real).skip_while(|x| x.key != a.key).skip(1) {
                        if intersect(&eras_of(p.value(a.key)), &eras_of(p.value(b.key))).is_empty() {
                            pair = Some((a.key, b.key));
                            break 'outer;
                        }
                    }
                    let _ = i;
                }
                let names: Vec<String> = many.iter().map(|d| format!("{}={}", d.name, p.value(d.key).name)).collect();
                let why = match pair {
                    Some((a, b)) => {
                        format!("{} and {} never co-existed", describe(a, p.value(a)), describe(b, p.value(b)))
                    }
                    None => "these values were never upstream in one release".into(),
                };
                Reality::Hypothetical {
                    reason: format!(
                        "{} differ from {} ({} commits, not one): {why}",
                        names.join(", "),
                        prof.name(),
                        many.len()
                    ),
                }
            }
        }
    };
    if base.is_hypothetical() || proposals.is_empty() {
        base
    } else {
        Reality::Proposal { keys: proposals, base: Box::new(base) }
    }
}
