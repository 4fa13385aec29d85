/* Dynptrs: declarations for native modules (see dynptr.cdef). */
#ifndef BPFVM_DYNPTR_H
#define BPFVM_DYNPTR_H

#include "xdp.h"
#include "dynptr.cdef"

#define BPFVM_DYNPTR_RDONLY_BIT 0x80000000u

#endif
