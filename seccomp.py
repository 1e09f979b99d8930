"""
The system-call filter (seccomp) that the sandbox's code runs under: a small fixed classic-BPF program, which
bubblewrap loads (`--seccomp FD`) just before it runs the code.

DENIED names each refused call, with its number on x86_64 and on aarch64 and why it is refused. seccomp_program()
builds the filter for an architecture (None where there is no table here: then no filter is loaded); filter_fd()
hands it to bubblewrap through a pipe. A refused call gets EPERM, and so does every call through another ABI's
entry (the 32-bit entry on x86_64, x32 numbers). FILTER switches the filter off: tests do, to show that each probe
would reach the kernel without it.

    seccomp_program("x86_64")    # -> bytes, 8 per instruction (struct sock_filter)
"""
import os
import platform
import struct

# System-call numbers: Linux uapi tables, arch/x86/entry/syscalls/syscall_64.tbl (x86_64) and
# include/uapi/asm-generic/unistd.h (aarch64); audit arch values: include/uapi/linux/audit.h.
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # EM_X86_64 / EM_AARCH64 | __AUDIT_ARCH_64BIT | _LE
X32_SYSCALL_BIT = 0x40000000  # x86_64's x32 ABI: the same arch value, syscall numbers with this bit set
DENIED = {  # name: (x86_64, aarch64, why it is refused)
    "keyctl": (250, 219, "kernel keyrings: the parent's session keyring and the user's keyrings are reached this way"),
    "add_key": (248, 217, "kernel keyrings: adds keys (and kernel memory) to a keyring"),
    "request_key": (249, 218, "kernel keyrings: searches the keyrings, may call out to a host helper"),
    "ptrace": (101, 117, "tracing a process: bubblewrap's PID 1 or a sibling, reading or changing its memory"),
    "process_vm_readv": (310, 270, "reads another process's memory"),
    "process_vm_writev": (311, 271, "writes another process's memory"),
    "pidfd_getfd": (438, 438, "takes a file descriptor out of another process"),
    "kcmp": (312, 272, "compares kernel objects of two processes: kernel-pointer ordering, a ptrace-class probe"),
    "io_uring_setup": (425, 425, "io_uring: a second system-call path this filter does not see, and a large attack "
                                 "surface"),
    "io_uring_enter": (426, 426, "io_uring: as io_uring_setup"),
    "io_uring_register": (427, 427, "io_uring: as io_uring_setup"),
    "userfaultfd": (323, 282, "stalls page faults inside the kernel at will: the usual tool to win kernel races"),
    "bpf": (321, 280, "eBPF programs and maps in the kernel"),
    "perf_event_open": (298, 241, "performance counters: side channels and a long record of kernel bugs"),
    "mount": (165, 40, "changes the file-system layout bubblewrap built"),
    "umount2": (166, 39, "uncovers what bubblewrap's mounts hide"),
    "pivot_root": (155, 41, "changes the root bubblewrap set"),
    "open_tree": (428, 428, "the new mount API: as mount"),
    "move_mount": (429, 429, "the new mount API: as mount"),
    "fsopen": (430, 430, "the new mount API: as mount"),
    "fsconfig": (431, 431, "the new mount API: as mount"),
    "fsmount": (432, 432, "the new mount API: as mount"),
    "fspick": (433, 433, "the new mount API: reconfigures an existing mount"),
    "mount_setattr": (442, 442, "changes a mount's flags (read-only, nosuid)"),
    "unshare": (272, 97, "new namespaces (bubblewrap already refuses user namespaces: --disable-userns)"),
    "setns": (308, 268, "joins another namespace"),
    "kexec_load": (246, 104, "loads a new kernel"),
    "kexec_file_load": (320, 294, "loads a new kernel"),
    "init_module": (175, 105, "loads a kernel module"),
    "finit_module": (313, 273, "loads a kernel module"),
    "delete_module": (176, 106, "unloads a kernel module"),
    "memfd_create": (319, 279, "anonymous files outside every limit (not the address space, not the tmpfs size): "
                               "refused, not bounded, since only a memory cgroup could bound them"),
    "memfd_secret": (447, 447, "as memfd_create, and its pages are locked out of the kernel's reach"),
    "shmget": (29, 194, "System V shared memory outlives its mapping, so the address-space limit does not bound it"),
    "msgget": (68, 186, "System V message queues: kernel memory outside every limit (32,000 queues of 16 KB)"),
    "syslog": (103, 116, "the kernel log (readable without privileges where dmesg_restrict is 0)"),
}
EPERM = 1
_RET_ERRNO, _RET_ALLOW = 0x00050000, 0x7FFF0000                     # include/uapi/linux/seccomp.h
_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06          # include/uapi/linux/bpf_common.h combinations
FILTER = True  # tests turn it off to show that each probe would reach the kernel without it


def seccomp_program(arch=None):
    """The filter as bytes (struct sock_filter: u16 code, u8 jt, u8 jf, u32 k, native byte order), or None for an
    architecture without a table here. A foreign audit arch (32-bit entry on x86_64) and x32 numbers get EPERM, the
    DENIED calls get EPERM, everything else is allowed.
        0: A = seccomp_data.arch         1: A == ARCH ? skip 1 : next     2: return EPERM
        3: A = seccomp_data.nr         [ 4: A >= X32 bit ? next : skip 1   5: return EPERM ]   x86_64 only
        n: A == denied[i] ? jump to the final `return EPERM` : next ...    then `return ALLOW`, `return EPERM`."""
    arch = arch or platform.machine()
    if arch not in AUDIT_ARCH:
        return None
    col = 0 if arch == "x86_64" else 1
    nrs = sorted({v[col] for v in DENIED.values()})
    deny = _RET_ERRNO | EPERM
    ins = [(_LD_W_ABS, 0, 0, 4), (_JEQ_K, 1, 0, AUDIT_ARCH[arch]), (_RET_K, 0, 0, deny), (_LD_W_ABS, 0, 0, 0)]
    if arch == "x86_64":
        ins += [(_JGE_K, 0, 1, X32_SYSCALL_BIT), (_RET_K, 0, 0, deny)]
    ins += [(_JEQ_K, len(nrs) - i, 0, nr) for i, nr in enumerate(nrs)]  # jt: over the rest and the ALLOW
    ins += [(_RET_K, 0, 0, _RET_ALLOW), (_RET_K, 0, 0, deny)]
    return b"".join(struct.pack("=HBBI", *i) for i in ins)


def filter_fd():
    """A pipe's read end holding the program, for bubblewrap's --seccomp (it reads to EOF); None without a table."""
    prog = seccomp_program() if FILTER else None
    if prog is None:
        return None
    r, w = os.pipe()  # the program is far below a pipe's 64 KB buffer, so this write never blocks
    os.write(w, prog)
    os.close(w)
    return r
