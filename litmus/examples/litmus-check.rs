//! Check litmus files without KVM: `cargo run -p litmus --example litmus-check -- FILE…`
//! (no FILE: the embedded catalogue). Prints diagnostics, and for clean
//! files the policy matrix and the disassembled bytecode of the first row.

use litmus::{catalogue_sources, check_all, compile, disassemble, policy_matrix, render_all, CompileOptions, Policy};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sources: Vec<(String, String)> = if args.is_empty() {
        catalogue_sources()
    } else {
        args.iter().map(|p| (p.clone(), std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{p}: {e}")))).collect()
    };
    match check_all(&sources) {
        Err(diags) => {
            eprint!("{}", render_all(&diags));
            std::process::exit(1);
        }
        Ok((tests, warnings)) => {
            if !warnings.is_empty() {
                eprint!("{}", render_all(&warnings));
            }
            for t in &tests {
                let matrix = policy_matrix(&[], &t.expect_policies(), &Policy::default());
                println!("{} ({}) hash {}", t.name, t.file, t.hash);
                for p in &matrix {
                    println!("  policy {}", p.canonical());
                }
                let c = match compile(t, &matrix[0], &CompileOptions::default()) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("{}: {e}", t.name);
                        std::process::exit(2);
                    }
                };
                let blob = abi::litmus::Blob::parse(&c.blob).expect("compile checked the blob");
                println!("  {} bytes", c.blob.len());
                for line in disassemble(&blob).lines() {
                    println!("    {line}");
                }
            }
        }
    }
}
