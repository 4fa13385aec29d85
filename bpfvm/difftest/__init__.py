"""Differential testing and robustness fuzzing (issue 9).

Every rewrite and engine must give what the plain interpreter gives, and the interpreter what the kernel
gives. The pieces, smallest first:

  spec        `interp,none`, `jit,pruned`, `interp,raw` (unverified, unrewritten: the reference), `kernel`
  packets     well-formed Ethernet/VLAN/IPv4/IPv6/TCP/UDP/ICMP frames
  inputs      `RunCase` (packet, ctx, skb_linear, xdp_frags, map contents) and its generators per type
  observe     `Observation` of one run on a fresh object, bpfvm and kernel targets
  compare     field-by-field differences, side-by-side rendering
  minimise    shrink a differing input
  session     one program, two targets, N inputs (`bpfvm diff`)
  chooser, genstate, genbasic, gencalls, programs
              the program generator (random or hypothesis-driven) and its statements
  genprog, elfwriter, btfwriter
              a generated program linked like bpfvm.elf links, or written as an object libbpf loads
  progcheck   one generated program against the reference on every target
  malformed, robust
              malformed objects/BTF/text/instructions and the bounded, classifying runner
  cases, campaign
              reproducible failure cases and the parallel campaign (`bpfvm fuzz`)
"""
