"""Program rewrites that run after verification (each goes through bpfvm.patcher)."""
