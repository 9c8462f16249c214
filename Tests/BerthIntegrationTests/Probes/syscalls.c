// Makes, for real, the system calls a container's filter decides on, and prints one line for
// each: the call's label and "ok" or the name of the errno it failed with. Run on the host it
// shows what the kernel itself answers; in a container, what the filter does to that.
// Built by the tests with `gcc -static`, so it runs in any image.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/netlink.h>
#include <linux/perf_event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void report(const char *label, long result) {
    if (result < 0) printf("%s %s\n", label, strerrorname_np(errno));
    else printf("%s ok\n", label);
}

// A call through the i386 entry (int 0x80), as a 32-bit program makes it: its own numbers.
static long call_i386(long number, long a, long b, long c) {
    long result;
    __asm__ volatile("int $0x80" : "=a"(result) : "a"(number), "b"(a), "c"(b), "d"(c) : "memory");
    if (result < 0 && result > -4096) { errno = (int)-result; return -1; }
    return result;
}

int main(void) {
    // The "shocker": a handle for / is allowed, opening by a handle is not, least of all a forged
    // one for inode 2, the root directory of an ext4 file system, wherever the container's
    // tree lives on it.
    struct { struct file_handle h; unsigned char bytes[128]; } handle = { .h.handle_bytes = 128 };
    int mount_id;
    long named = syscall(SYS_name_to_handle_at, AT_FDCWD, "/", &handle.h, &mount_id, 0);
    report("name_to_handle_at", named);
    int root = open("/", O_RDONLY | O_DIRECTORY);
    long fd = named < 0 ? (errno = EBADF, -1) : syscall(SYS_open_by_handle_at, root, &handle.h, O_RDONLY);
    report("open_by_handle_at", fd);
    if (fd >= 0) close((int)fd);
    struct { struct file_handle h; uint32_t ino_gen[2]; } forged = {
        .h.handle_bytes = 8, .h.handle_type = 1 /* FILEID_INO32_GEN */, .ino_gen = {2, 0} };
    fd = syscall(SYS_open_by_handle_at, root, &forged.h, O_RDONLY | O_DIRECTORY);
    report("open_by_handle_at-forged", fd);
    if (fd >= 0) close((int)fd);

    // Keys are not namespaced. A type no kernel has, so that nothing is added even unfiltered.
    report("add_key", syscall(SYS_add_key, "berth-no-such-type", "x", "y", 1, -3 /* session keyring */));
    report("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0));

    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    long next = syscall(SYS_bpf, BPF_PROG_GET_NEXT_ID, &attr, sizeof attr);
    // No program loaded anywhere is not a refusal.
    report("bpf", next < 0 && errno == ENOENT ? 0 : next);

    struct perf_event_attr event = { .type = PERF_TYPE_SOFTWARE, .size = sizeof event,
                                     .config = PERF_COUNT_SW_CPU_CLOCK, .disabled = 1 };
    fd = syscall(SYS_perf_event_open, &event, -1 /* every process */, 0 /* on CPU 0 */, -1, 0);
    report("perf_event_open", fd);
    if (fd >= 0) close((int)fd);

    // A file without a swap signature: the kernel turns it down even when the filter lets it by.
    char swapfile[] = "/tmp/berth-swap.XXXXXX";
    int swap = mkstemp(swapfile);
    if (swap >= 0) {
        static char zeros[65536];
        (void)!write(swap, zeros, sizeof zeros);
        close(swap);
    }
    report("swapon", syscall(SYS_swapon, swapfile, 0));
    unlink(swapfile);

    // An architecture no kernel has in its flags, so an unfiltered call changes nothing.
    report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0x7ffeUL << 16));
    report("init_module", syscall(SYS_init_module, NULL, 0, ""));
    report("finit_module", syscall(SYS_finit_module, -1, "", 0));
    // The monotonic clock cannot be set at all.
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    report("clock_settime", syscall(SYS_clock_settime, CLOCK_MONOTONIC, &now));

    // The same refused call through the other ABIs: x32 (numbers with bit 30) and i386.
    report("keyctl-x32", syscall(0x40000000 | SYS_keyctl, 0, -3, 0));
    report("keyctl-i386", call_i386(288 /* i386 keyctl */, 0, -3, 0));
    report("getpid-i386", call_i386(20 /* i386 getpid */, 0, 0, 0));

    // Audit sockets look absent; other netlink sockets work.
    fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_AUDIT);
    report("socket-netlink-audit", fd);
    if (fd >= 0) close((int)fd);
    fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    report("socket-netlink-route", fd);
    if (fd >= 0) close((int)fd);

    // Calls that follow the capabilities a container keeps: memory locking and the kernel log
    // (CAP_IPC_LOCK, CAP_SYSLOG: dropped) are refused; reboot and ptrace (CAP_SYS_BOOT,
    // CAP_SYS_PTRACE: kept) reach the kernel, here to be turned down for their arguments.
    static char page[4096];
    long locked = mlock(page, sizeof page);
    report("mlock", locked);
    if (locked == 0) munlock(page, sizeof page);
    report("syslog", syscall(SYS_syslog, 10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0));
    report("reboot", syscall(SYS_reboot, 0, 0, 0, NULL));
    report("ptrace", syscall(SYS_ptrace, 3 /* PTRACE_PEEKUSER */, 0x7ffffff0, 0, NULL));

    // A call newer than systemd 252's list (cachestat, 451) gets the filter's default errno.
    report("cachestat", syscall(451, -1, NULL, NULL, 0));
    return 0;
}
