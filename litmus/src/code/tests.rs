use super::*;

fn parse(src: &str, kind: ThreadKind) -> (Vec<Stmt>, Vec<Diagnostic>) {
    let f = SourceFile::new("t", src);
    let map = TextMap::identity(0, src.len());
    parse_code(&f, &map, src, kind, &mut RecordBudget::default())
}

#[test]
fn all_vcpu_ops_round_trip() {
    let src = "load x -> r0\nstore x 1; store x r0\nxchg x 2 -> r1\ncmpxchg x 1 r1 -> r2\nfetch_add x 1 -> r3\nmfence\n\
                   wait f\nwait f == 2\nsignal f\nsignal f 3\nbarrier\ndelay 100\ntouch x write\ntouch x\nmmap u rw\nmunmap x\n\
                   mprotect x none\nmadvise x free\ncow x\nksm x y\nmigrate x\nmkclean x -> r4\nreclaim x\nmremap x -> u\nalloc u # c\n\
                   truncate x\nuffd_wp x on\nuffd_wp x off\n\
                   madvise x dontneed at after_ptl_release { signal s1; wait s2 } at before_free {\n delay 5\n}\n\
                   munmap x at after_pte_clear#2 { signal a } # a comment\n";
    let (code, d) = parse(src, ThreadKind::Vcpu);
    assert!(d.is_empty(), "{d:?}");
    let printed: Vec<String> = code.iter().map(|s| s.to_string()).collect();
    assert_eq!(printed[0], "load x -> r0");
    assert_eq!(printed[2], "store x r0");
    assert_eq!(printed[4], "cmpxchg x 1 r1 -> r2");
    assert_eq!(printed[9], "signal f 1");
    assert_eq!(
        printed[printed.len() - 2],
        "madvise x dontneed at after_ptl_release { signal s1 1; wait s2 } at before_free { delay 5 }"
    );
    assert_eq!(printed[26], "truncate x");
    assert_eq!(printed[27], "uffd_wp x on");
    assert_eq!(printed[28], "uffd_wp x off");
    assert_eq!(printed.last().unwrap(), "munmap x at after_pte_clear#2 { signal a 1 }");
    assert_eq!(code.last().unwrap().hooks[0].nth, 2);
    assert_eq!(code.len(), 31);
}

#[test]
fn device_loop_spans_lines() {
    let src = "prefetch x\nloop 3 {\n  dma_store x 1\n  loop 2 { dma_load x -> r0 }\n}\ndma_fetch_add x 1 -> r1\n";
    let (code, d) = parse(src, ThreadKind::Device);
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(code.len(), 3);
    assert_eq!(code[1].to_string(), "loop 3 { dma_store x 1; loop 2 { dma_load x -> r0 } }");
}

#[test]
fn errors_have_positions_and_lists() {
    let (_, d) = parse("load x -> r0\nstore x 1\nlod x -> r0\n", ThreadKind::Vcpu);
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].line, d[0].col), (3, 1));
    assert_eq!(d[0].message, "unknown operation `lod`");
    assert!(d[0].notes[0].contains("load, store, xchg"));
    let (_, d) = parse("madvise x dontneed at after_ptl_relase { signal a }\n", ThreadKind::Vcpu);
    assert_eq!(d[0].message, "unknown hook `after_ptl_relase`");
    assert_eq!((d[0].line, d[0].col), (1, 23));
    assert!(d[0].notes[0].contains("after_ptl_release"));
    let (_, d) = parse("load x r0\n", ThreadKind::Vcpu);
    assert_eq!(d[0].message, "expected `->`, found `r0`");
    assert_eq!(d[0].col, 8);
    let (_, d) = parse("dma_load x -> r0\n", ThreadKind::Vcpu);
    assert!(d[0].message.contains("device operation"));
    let (_, d) = parse("load x -> r0\n", ThreadKind::Device);
    assert!(d[0].notes[0].contains("dma_load"));
    let (_, d) = parse("loop 2 {\n dma_store x 1\n", ThreadKind::Device);
    assert!(d[0].message.starts_with("unclosed `{`"), "{d:?}");
    let (_, d) = parse("mfence at after_flush { signal a }", ThreadKind::Vcpu);
    assert!(d[0].message.contains("takes no hook"));
    let (_, d) = parse("store x 1 at after_fault { load x -> r0 }", ThreadKind::Vcpu);
    assert!(d[0].message.contains("not allowed in a hook block"), "{d:?}");
    let (_, d) = parse("load x -> r0 r1\nstore x $\n", ThreadKind::Vcpu);
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(d[1].message, "expected a value (a number or a register), found `$`");
    let (_, d) = parse("store x 18446744073709551615", ThreadKind::Vcpu);
    assert!(d[0].message.contains("reserved"));
    let (_, d) = parse("load x -> r32", ThreadKind::Vcpu);
    assert!(d[0].message.contains("invalid register"));
    let (_, d) = parse("munmap x at after_pte_clear#0 { signal a }", ThreadKind::Vcpu);
    assert!(d[0].message.contains("counts firings from 1"), "{d:?}");
    let (_, d) = parse("munmap x at before_free#2 { signal a } at before_free#2 { signal b }", ThreadKind::Vcpu);
    assert!(d[0].message.contains("`before_free#2` given twice"), "{d:?}");
    let (c, d) = parse("munmap x at before_free { signal a } at before_free#2 { signal b }", ThreadKind::Vcpu);
    assert!(d.is_empty() && c[0].hooks.len() == 2, "{d:?}");
    let (_, d) = parse("uffd_wp x maybe", ThreadKind::Vcpu);
    assert!(d[0].notes[0].contains("on, off"), "{d:?}");
}

#[test]
fn literal_map_handles_multiline_and_escapes() {
    let file = "a = 1\ncode = \"\"\"\nload x -> r0\n  lod y\n\"\"\"\ns = \"a\\tb c\"\n";
    let start = file.find("\"\"\"").unwrap();
    let end = file.rfind("\"\"\"").unwrap() + 3;
    let value = "load x -> r0\n  lod y\n";
    let m = TextMap::for_literal(file, start, end, value);
    let f = SourceFile::new("f", file);
    let i = value.find("lod").unwrap();
    assert_eq!(f.line_col(m.file_offset(i)), (4, 3));
    let s2 = file.find("\"a").unwrap();
    let e2 = file.rfind('"').unwrap() + 1;
    let m = TextMap::for_literal(file, s2, e2, "a\tb c");
    assert_eq!(f.line_col(m.file_offset(4)), (6, 11));
}
