package bpf

// The objects and bindings are committed: building skep needs no clang.
// `make bpf` regenerates them; the flags pin the compiler and strip the
// paths so that a regenerate on a clean tree changes nothing.
//go:generate go tool bpf2go -cc clang-14 -strip llvm-strip-14 -target bpfel -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu" lb lb.c
