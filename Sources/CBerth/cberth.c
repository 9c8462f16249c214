#define _GNU_SOURCE
#include "cberth.h"

#include <errno.h>
#include <grp.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <net/if.h>
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <linux/bpf.h>
#include <linux/capability.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

struct cberth_open_how {
    uint64_t flags;
    uint64_t mode;
    uint64_t resolve;
};

int cberth_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve) {
    struct cberth_open_how how = { .flags = flags, .mode = mode, .resolve = resolve };
    // With RESOLVE_BENEATH or RESOLVE_IN_ROOT, a lookup through ".." fails with EAGAIN when any
    // mount or rename happened on the system meanwhile: the kernel asks to be asked again.
    for (int attempt = 0;; attempt++) {
        int fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
        if (fd >= 0 || errno != EAGAIN || attempt == 64) return fd;
    }
}

int cberth_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags) {
    return renameat2(olddirfd, oldpath, newdirfd, newpath, flags);
}

int cberth_flock(int fd, int operation) { return flock(fd, operation); }

int cberth_syncfs(int fd) { return syncfs(fd); }

int cberth_get_inode_flags(int fd, unsigned int *flags) { return ioctl(fd, FS_IOC_GETFLAGS, flags); }

int cberth_set_inode_flags(int fd, unsigned int flags) { return ioctl(fd, FS_IOC_SETFLAGS, &flags); }

int cberth_terminal_columns(int fd) {
    struct winsize ws;
    if (ioctl(fd, TIOCGWINSZ, &ws) != 0 || ws.ws_col == 0) return -1;
    return ws.ws_col;
}

int64_t cberth_birth_time(int dirfd, const char *path, int flags) {
    struct statx stx;
    if (statx(dirfd, path, flags, STATX_BTIME, &stx) != 0) return -1;
    if (!(stx.stx_mask & STATX_BTIME)) { errno = EOPNOTSUPP; return -1; }
    return stx.stx_btime.tv_sec;
}

dev_t cberth_makedev(unsigned int major, unsigned int minor) { return makedev(major, minor); }
unsigned int cberth_major(dev_t dev) { return major(dev); }
unsigned int cberth_minor(dev_t dev) { return minor(dev); }

int cberth_pivot_root(const char *new_root, const char *put_old) {
    return (int)syscall(SYS_pivot_root, new_root, put_old);
}

int cberth_drop_bounding_capability(int cap) { return prctl(PR_CAPBSET_DROP, cap, 0, 0, 0); }

int cberth_set_inheritable_capabilities(unsigned long long set) {
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &header, data) < 0) return -1;
    data[0].inheritable = (__u32)set;
    data[1].inheritable = (__u32)(set >> 32);
    return (int)syscall(SYS_capset, &header, data);
}

int cberth_bounding_holds(int cap) { return prctl(PR_CAPBSET_READ, cap, 0, 0, 0); }

int cberth_raise_ambient_capability(int cap) { return prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0); }

int cberth_keep_capabilities(int keep) { return prctl(PR_SET_KEEPCAPS, keep, 0, 0, 0); }

int cberth_set_no_new_privileges(void) { return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); }

int cberth_set_personality(unsigned long persona) { return personality(persona); }

int cberth_set_parent_death_signal(int sig) { return prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0); }

int cberth_interface_up(const char *name) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct ifreq ifr = {0};
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    int rc = ioctl(fd, SIOCGIFFLAGS, &ifr);
    if (rc == 0) {
        ifr.ifr_flags |= IFF_UP;
        rc = ioctl(fd, SIOCSIFFLAGS, &ifr);
    }
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

int cberth_close_from(unsigned int first) { return (int)syscall(SYS_close_range, first, ~0U, 0); }

int cberth_sigrtmin_plus(int n) { return SIGRTMIN + n; }

int cberth_set_name(const char *name) { return prctl(PR_SET_NAME, name, 0, 0, 0); }

struct cberth_clone_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
};

// In a child between clone and exec: every signal's disposition back to the default.
static void cberth_default_dispositions(void) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < _NSIG; sig++) (void)sigaction(sig, &dfl, NULL);
}

pid_t cberth_spawn(unsigned long flags, int exe_fd, const char *path, char *const argv[], char *const envp[], int spec_fd,
                   int cgroup_fd, int new_session, int *report_fd) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) < 0) return -1;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid;
    if (cgroup_fd >= 0) {
        // clone3 places the child in the cgroup as it is made, without a migration afterwards.
        struct cberth_clone_args args;
        memset(&args, 0, sizeof args);
        args.flags = flags | 0x200000000ULL /* CLONE_INTO_CGROUP */;
        args.exit_signal = SIGCHLD;
        args.cgroup = (uint64_t)cgroup_fd;
        pid = (pid_t)syscall(SYS_clone3, &args, sizeof args);
    } else {
        pid = (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, NULL);
    }
    if (pid == 0) {
        cberth_default_dispositions();
        if (spec_fd >= 0) {
            if (spec_fd == 3) {
                if (fcntl(3, F_SETFD, 0) < 0) goto fail;
            } else if (dup2(spec_fd, 3) < 0) {
                goto fail;
            }
        }
        if (new_session) {
            if (setsid() < 0) goto fail;
            (void)ioctl(0, TIOCSCTTY, 1);
        }
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (exe_fd >= 0) {
            syscall(SYS_execveat, exe_fd, "", argv, envp, AT_EMPTY_PATH);
        } else {
            execve(path, argv, envp);
        }
    fail:;
        int e = errno;
        (void)!write(report[1], &e, sizeof e);
        _exit(127);
    }
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(report[1]);
    if (pid < 0) {
        close(report[0]);
        errno = saved;
        return -1;
    }
    *report_fd = report[0];
    return pid;
}

int cberth_spawn_result(pid_t pid, int report_fd) {
    int e = 0;
    ssize_t n;
    do { n = read(report_fd, &e, sizeof e); } while (n < 0 && errno == EINTR);
    close(report_fd);
    if (n == (ssize_t)sizeof e) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
        errno = e;
        return -1;
    }
    return 0;
}

struct cberth_mount_attr {
    uint64_t attr_set;
    uint64_t attr_clr;
    uint64_t propagation;
    uint64_t userns_fd;
};

int cberth_fsopen(const char *type) { return (int)syscall(SYS_fsopen, type, 1 /* FSOPEN_CLOEXEC */); }

int cberth_fsconfig_string(int fs, const char *key, const char *value) {
    return (int)syscall(SYS_fsconfig, fs, 1 /* FSCONFIG_SET_STRING */, key, value, 0);
}

int cberth_fsconfig_create(int fs) { return (int)syscall(SYS_fsconfig, fs, 6 /* FSCONFIG_CMD_CREATE */, NULL, NULL, 0); }

int cberth_fsmount(int fs, uint64_t attributes) {
    return (int)syscall(SYS_fsmount, fs, 1 /* FSMOUNT_CLOEXEC */, (unsigned int)attributes);
}

int cberth_open_tree(int dirfd, const char *path, int recursive) {
    unsigned int flags = 1 /* OPEN_TREE_CLONE */ | O_CLOEXEC | (recursive ? AT_RECURSIVE : 0) | (path[0] ? 0 : AT_EMPTY_PATH);
    return (int)syscall(SYS_open_tree, dirfd, path, flags);
}

int cberth_mount_setattr(int fd, uint64_t set, uint64_t clear, int userns_fd, int recursive) {
    struct cberth_mount_attr attr = { .attr_set = set, .attr_clr = clear, .userns_fd = (uint64_t)(userns_fd < 0 ? 0 : userns_fd) };
    return (int)syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0), &attr, sizeof attr);
}

int cberth_mount_make_private(int fd, int recursive) {
    struct cberth_mount_attr attr = { .propagation = MS_PRIVATE };
    return (int)syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0), &attr, sizeof attr);
}

int cberth_move_mount_to_fd(int mount_fd, int target_fd) {
    return (int)syscall(SYS_move_mount, mount_fd, "", target_fd, "",
                        0x00000004 /* MOVE_MOUNT_F_EMPTY_PATH */ | 0x00000040 /* MOVE_MOUNT_T_EMPTY_PATH */);
}

static int unix_address(struct sockaddr_un *address, const char *path);

int cberth_bind_datagram_socket(const char *path) {
    struct sockaddr_un address;
    if (unix_address(&address, path) != 0) return -1;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    (void)unlink(path);
    if (bind(fd, (struct sockaddr *)&address, sizeof address) < 0 || chmod(path, 0666) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

/// Fills `address` with `path`; ENAMETOOLONG when it does not fit.
static int unix_address(struct sockaddr_un *address, const char *path) {
    memset(address, 0, sizeof *address);
    address->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof address->sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(address->sun_path, path);
    return 0;
}

int cberth_send_datagram(const char *path, const void *data, size_t size) {
    struct sockaddr_un address;
    if (unix_address(&address, path) != 0) return -1;
    socklen_t length = sizeof address;
    if (path[0] == '@') {
        address.sun_path[0] = 0;
        length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
    }
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    ssize_t sent = sendto(fd, data, size, MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&address, length);
    int saved = errno;
    close(fd);
    errno = saved;
    return sent < 0 ? -1 : 0;
}

int cberth_signal_thread_on_input(int fd) {
    struct f_owner_ex owner = {.type = F_OWNER_TID, .pid = (pid_t)syscall(SYS_gettid)};
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETOWN_EX, &owner) < 0) return -1;
    return fcntl(fd, F_SETFL, flags | O_ASYNC | O_NONBLOCK);
}

int cberth_listen_seqpacket(const char *path) {
    struct sockaddr_un address;
    if (unix_address(&address, path) != 0) return -1;
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    (void)unlink(path);
    // Made with no access for anyone, then opened to its owner: never reachable by others.
    mode_t mask = umask(0777);
    int bound = bind(fd, (struct sockaddr *)&address, sizeof address);
    umask(mask);
    if (bound < 0 || chmod(path, 0600) < 0 || listen(fd, 4) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int cberth_connect_seqpacket(const char *path) {
    struct sockaddr_un address;
    if (unix_address(&address, path) != 0) return -1;
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int cberth_set_window_size(int fd, unsigned short rows, unsigned short columns) {
    struct winsize ws = {.ws_row = rows, .ws_col = columns};
    return ioctl(fd, TIOCSWINSZ, &ws);
}

int cberth_get_window_size(int fd, unsigned short *rows, unsigned short *columns) {
    struct winsize ws;
    if (ioctl(fd, TIOCGWINSZ, &ws) != 0) return -1;
    *rows = ws.ws_row;
    *columns = ws.ws_col;
    return 0;
}

pid_t cberth_spawn_with_streams(int exe_fd, char *const argv[], char *const envp[], const int streams[3], int extra_fd, int new_session) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int in = streams[0], out = streams[1], err = streams[2];
    pid_t pid = (pid_t)syscall(SYS_clone, SIGCHLD, NULL, NULL, NULL, NULL);
    if (pid == 0) {
        cberth_default_dispositions();
        if (new_session && setsid() < 0) _exit(127);
        // Above every target first, so no dup2 below overwrites a source still to come.
        int moved[4];
        int sources[4] = { in, out, err, extra_fd };
        for (int i = 0; i < 4; i++) {
            moved[i] = sources[i] < 0 ? -1 : fcntl(sources[i], F_DUPFD, 10);
            if (sources[i] >= 0 && moved[i] < 0) _exit(127);
        }
        for (int i = 0; i < 4; i++) {
            if (moved[i] >= 0 && dup2(moved[i], i) < 0) _exit(127);
        }
        // Closed at the exec (CLOSE_RANGE_CLOEXEC), not now: the executable's descriptor is among them.
        (void)syscall(SYS_close_range, extra_fd >= 0 ? 4 : 3, ~0U, 4U);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        syscall(SYS_execveat, exe_fd, "", argv, envp, AT_EMPTY_PATH);
        _exit(127);
    }
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = saved;
    return pid;
}

int cberth_spawn_detached(int exe_fd, char *const argv[], char *const envp[], const int streams[3], int extra_fd) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = (pid_t)syscall(SYS_clone, SIGCHLD, NULL, NULL, NULL, NULL);
    if (pid == 0) {
        // The go-between: it ends at once, and its child, reparented, is no one's to wait for.
        _exit(cberth_spawn_with_streams(exe_fd, argv, envp, streams, extra_fd, 1) > 0 ? 0 : 127);
    }
    int saved = errno, status = 0;
    if (pid > 0) {
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        errno = saved;
        return -1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        errno = ECHILD;
        return -1;
    }
    return 0;
}

int cberth_setns(int fd, int type) { return setns(fd, type); }

pid_t cberth_read_mount_namespace(int ns_fd, int proc_fd, int out_fd) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = fork();
    if (pid == 0) {
        // Only async-signal-safe calls from here: the parent has other threads. The parent's
        // other descriptors go first: one open in a mount would make its unmount fail busy.
        char buffer[16384];
        int keep[3] = { ns_fd, proc_fd, out_fd }, from = 3;
        for (int i = 0; i < 3; i++)
            for (int j = i + 1; j < 3; j++)
                if (keep[j] < keep[i]) { int t = keep[i]; keep[i] = keep[j]; keep[j] = t; }
        for (int i = 0; i < 3; i++) {
            if (keep[i] < from) continue;
            if (keep[i] > from) syscall(SYS_close_range, (unsigned)from, (unsigned)keep[i] - 1, 0U);
            from = keep[i] + 1;
        }
        syscall(SYS_close_range, (unsigned)from, ~0U, 0U);
        if (setns(ns_fd, CLONE_NEWNS) < 0) _exit(2);
        int table = openat(proc_fd, "self/mountinfo", O_RDONLY | O_CLOEXEC);
        if (table < 0) _exit(3);
        for (;;) {
            ssize_t n = read(table, buffer, sizeof buffer);
            if (n == 0) _exit(0);
            if (n < 0) {
                if (errno == EINTR) continue;
                _exit(4);
            }
            for (ssize_t done = 0; done < n;) {
                ssize_t w = write(out_fd, buffer + done, (size_t)(n - done));
                if (w < 0 && errno != EINTR) _exit(5);
                if (w > 0) done += w;
            }
        }
    }
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = saved;
    return pid;
}

int cberth_set_limit(int resource, unsigned long long soft, unsigned long long hard) {
    struct rlimit limit = { .rlim_cur = (rlim_t)soft, .rlim_max = (rlim_t)hard }, highest;
    if (setrlimit(resource, &limit) == 0) return 0;
    // As systemd's setrlimit_closest: without CAP_SYS_RESOURCE a hard limit cannot go up, so
    // both go as near as the present hard limit lets them.
    if (errno != EPERM || getrlimit(resource, &highest) < 0) return -1;
    if (highest.rlim_max == RLIM_INFINITY) {
        errno = EPERM;
        return -1;
    }
    struct rlimit fixed = { .rlim_cur = limit.rlim_cur < highest.rlim_max ? limit.rlim_cur : highest.rlim_max,
                            .rlim_max = limit.rlim_max < highest.rlim_max ? limit.rlim_max : highest.rlim_max };
    if (fixed.rlim_cur == highest.rlim_cur && fixed.rlim_max == highest.rlim_max) return 0;
    return setrlimit(resource, &fixed);
}

int cberth_get_limit(pid_t pid, int resource, unsigned long long *soft, unsigned long long *hard) {
    struct rlimit limit;
    if (prlimit(pid, resource, NULL, &limit) < 0) return -1;
    *soft = (unsigned long long)limit.rlim_cur;
    *hard = (unsigned long long)limit.rlim_max;
    return 0;
}

int cberth_set_cpus(const int *cpus, int count) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int i = 0; i < count; i++) {
        if (cpus[i] < 0 || cpus[i] >= CPU_SETSIZE) {
            errno = EINVAL;
            return -1;
        }
        CPU_SET(cpus[i], &set);
    }
    return sched_setaffinity(0, sizeof set, &set);
}

int cberth_make_undumpable(void) { return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); }

int cberth_open_pty_pair(int *slave) {
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0) return -1;
    char name[128];
    if (grantpt(master) < 0 || unlockpt(master) < 0 || ptsname_r(master, name, sizeof name) != 0) {
        int saved = errno;
        close(master);
        errno = saved;
        return -1;
    }
    *slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (*slave < 0) {
        int saved = errno;
        close(master);
        errno = saved;
        return -1;
    }
    return master;
}

long cberth_file_system_type(int fd) {
    struct statfs fs;
    if (fstatfs(fd, &fs) < 0) return -1;
    return (long)fs.f_type;
}

pid_t cberth_clone_process(unsigned long flags) { return (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, NULL); }

#if defined(__x86_64__)
// clone3 whose child starts on the stack the arguments give it and runs fn(arg) there, then
// exits with its result: the child cannot return into the caller's frames (with CLONE_VM they
// are the parent's). The parent gets the child's pid, or -1 with errno.
static pid_t cberth_clone3_running(struct cberth_clone_args *args, int (*fn)(void *), void *arg) {
    long ret;
    register int (*function)(void *) __asm__("r12") = fn;
    register void *argument __asm__("r13") = arg;
    __asm__ volatile(
        "syscall\n\t"
        "test %%rax, %%rax\n\t"
        "jnz 1f\n\t"
        "xor %%ebp, %%ebp\n\t"
        "mov %%r13, %%rdi\n\t"
        "call *%%r12\n\t"
        "mov %%eax, %%edi\n\t"
        "mov $60, %%eax\n\t" /* exit */
        "syscall\n\t"
        "hlt\n\t"
        "1:\n\t"
        : "=a"(ret)
        : "0"((long)SYS_clone3), "D"(args), "S"(sizeof *args), "r"(function), "r"(argument)
        : "rcx", "r11", "memory");
    if (ret < 0) {
        errno = (int)-ret;
        return -1;
    }
    return (pid_t)ret;
}
#endif

pid_t cberth_clone_process_into(int cgroup_fd, int (*fn)(void *), void *arg) {
    struct cberth_clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = cgroup_fd >= 0 ? 0x200000000ULL /* CLONE_INTO_CGROUP */ : 0;
    args.exit_signal = SIGCHLD;
    args.cgroup = (uint64_t)(cgroup_fd >= 0 ? cgroup_fd : 0);
#if defined(__x86_64__)
    // The child shares this process's memory until it execs, as posix_spawn's does: no page
    // tables copied for it, none torn down at its exec. Its own stack, every signal blocked
    // meanwhile (the child sets its mask), and this process waits (CLONE_VFORK).
    size_t size = 8 << 20;
    void *stack = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) return -1;
    args.flags |= CLONE_VM | CLONE_VFORK;
    args.stack = (uint64_t)(uintptr_t)stack;
    args.stack_size = size;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = cberth_clone3_running(&args, fn, arg);
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    munmap(stack, size);
    errno = saved;
    return pid;
#else
    pid_t pid = (pid_t)syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0) _exit(fn(arg));
    return pid;
#endif
}

int cberth_become_namespace_root(void) {
    if (setgroups(0, NULL) < 0 || setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0) return -1;
    return 0;
}

// The child of cberth_new_user_namespace: it shares the caller's memory and descriptors, so it
// makes one raw system call: it waits until the caller closes the pipe's writer (or a signal
// interrupts it, after which the caller's map writes fail and it reports that).
static int cberth_hold_namespace(void *reader) {
    char byte;
    (void)syscall(SYS_read, (int)(intptr_t)reader, &byte, 1);
    return 0;
}

int cberth_new_user_namespace(unsigned int base, unsigned int count) {
    int release[2];
    if (pipe2(release, O_CLOEXEC) < 0) return -1;
    const size_t size = 64 * 1024;
    char *stack = malloc(size);
    int result = -1, saved = ENOMEM;
    pid_t pid = -1;
    if (stack) {
        // No exit signal: the caller's SIGCHLD stays its children's; waited for with __WALL.
        pid = clone(cberth_hold_namespace, stack + size, CLONE_NEWUSER | CLONE_VM | CLONE_FILES, (void *)(intptr_t)release[0]);
        saved = errno;
    }
    if (pid > 0) {
        char path[64], line[64];
        int length = snprintf(line, sizeof line, "0 %u %u\n", base, count);
        int mapped = 1;
        for (int i = 0; i < 2 && mapped; i++) {
            snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, i == 0 ? "uid_map" : "gid_map");
            int fd = open(path, O_WRONLY | O_CLOEXEC);
            mapped = fd >= 0 && write(fd, line, (size_t)length) == length;
            if (fd >= 0) close(fd);
        }
        if (mapped) {
            snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
            result = open(path, O_RDONLY | O_CLOEXEC);
        }
        saved = errno;
    }
    close(release[1]);
    if (pid > 0) {
        while (waitpid(pid, NULL, __WALL) < 0 && errno == EINTR) {}
    }
    close(release[0]);
    free(stack);
    errno = saved;
    return result;
}

int cberth_open_pty(char *name, size_t size) {
    int fd = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) return -1;
    if (grantpt(fd) != 0 || unlockpt(fd) != 0 || ptsname_r(fd, name, size) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int cberth_set_controlling_terminal(int fd) { return ioctl(fd, TIOCSCTTY, 0); }

int cberth_copy_window_size(int from, int to) {
    struct winsize ws;
    if (ioctl(from, TIOCGWINSZ, &ws) != 0) return -1;
    return ioctl(to, TIOCSWINSZ, &ws);
}

int cberth_signalfd(const sigset_t *set) { return signalfd(-1, set, SFD_CLOEXEC); }

int cberth_make_raw(int fd, void *saved, size_t size) {
    if (size < sizeof(struct termios)) { errno = EINVAL; return -1; }
    if (tcgetattr(fd, (struct termios *)saved) != 0) return -1;
    struct termios raw = *(struct termios *)saved;
    cfmakeraw(&raw);
    return tcsetattr(fd, TCSANOW, &raw);
}

int cberth_restore_terminal(int fd, const void *saved) {
    return tcsetattr(fd, TCSANOW, (const struct termios *)saved);
}

int cberth_bpf_load_device_program(const void *instructions, uint32_t count) {
    union bpf_attr load;
    memset(&load, 0, sizeof load);
    load.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
    load.insn_cnt = count;
    load.insns = (uint64_t)(uintptr_t)instructions;
    load.license = (uint64_t)(uintptr_t)"MIT";
    return (int)syscall(SYS_bpf, BPF_PROG_LOAD, &load, sizeof load);
}

int cberth_bpf_attach_device_program(int target_fd, int program_fd, uint32_t flags) {
    union bpf_attr attach;
    memset(&attach, 0, sizeof attach);
    attach.target_fd = (uint32_t)target_fd;
    attach.attach_bpf_fd = (uint32_t)program_fd;
    attach.attach_type = BPF_CGROUP_DEVICE;
    attach.attach_flags = flags;
    return (int)syscall(SYS_bpf, BPF_PROG_ATTACH, &attach, sizeof attach);
}

static int cberth_bpf_program_tag(int fd, unsigned char tag[BPF_TAG_SIZE]) {
    struct bpf_prog_info info;
    memset(&info, 0, sizeof info);
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.info.bpf_fd = (uint32_t)fd;
    attr.info.info_len = sizeof info;
    attr.info.info = (uint64_t)(uintptr_t)&info;
    if (syscall(SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, &attr, sizeof attr) != 0) return -1;
    memcpy(tag, info.tag, BPF_TAG_SIZE);
    return 0;
}

int cberth_bpf_settle_device_program(int target_fd, int program_fd) {
    enum { most = 64 };
    uint32_t ids[most];
    union bpf_attr query;
    memset(&query, 0, sizeof query);
    query.query.target_fd = (uint32_t)target_fd;
    query.query.attach_type = BPF_CGROUP_DEVICE;
    query.query.prog_ids = (uint64_t)(uintptr_t)ids;
    query.query.prog_cnt = most;
    unsigned char wanted[BPF_TAG_SIZE], found[BPF_TAG_SIZE];
    if (syscall(SYS_bpf, BPF_PROG_QUERY, &query, sizeof query) != 0 || cberth_bpf_program_tag(program_fd, wanted) != 0) return -1;
    int others[most], count = 0, same = 0;
    for (uint32_t i = 0; i < query.query.prog_cnt && i < most; i++) {
        union bpf_attr get;
        memset(&get, 0, sizeof get);
        get.prog_id = ids[i];
        int fd = (int)syscall(SYS_bpf, BPF_PROG_GET_FD_BY_ID, &get, sizeof get);
        if (fd < 0) continue;
        if (!same && cberth_bpf_program_tag(fd, found) == 0 && memcmp(found, wanted, BPF_TAG_SIZE) == 0) {
            same = 1;
            close(fd);
        } else {
            others[count++] = fd;
        }
    }
    int rc = same ? 0 : (cberth_bpf_attach_device_program(target_fd, program_fd, BPF_F_ALLOW_MULTI) == 0 ? 1 : -1);
    int saved = errno;
    for (int i = 0; i < count; i++) {
        if (rc >= 0) {
            union bpf_attr detach;
            memset(&detach, 0, sizeof detach);
            detach.target_fd = (uint32_t)target_fd;
            detach.attach_bpf_fd = (uint32_t)others[i];
            detach.attach_type = BPF_CGROUP_DEVICE;
            (void)syscall(SYS_bpf, BPF_PROG_DETACH, &detach, sizeof detach);
        }
        close(others[i]);
    }
    errno = saved;
    return rc;
}

int cberth_use_file_system_ids(uid_t uid, gid_t gid) {
    gid_t old_gid = (gid_t)syscall(SYS_setfsgid, gid);
    uid_t old_uid = (uid_t)syscall(SYS_setfsuid, uid);
    // setfsuid reports the previous id, never an error: ask again to learn whether it took.
    int rc = -1, saved = EPERM;
    if ((uid_t)syscall(SYS_setfsuid, -1) == uid && (gid_t)syscall(SYS_setfsgid, -1) == gid) {
        struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
        struct __user_cap_data_struct data[2];
        if (syscall(SYS_capget, &header, data) == 0) {
            data[0].effective = data[0].permitted;
            data[1].effective = data[1].permitted;
            rc = (int)syscall(SYS_capset, &header, data);
        }
        saved = errno;
    }
    if (rc != 0) {
        // Nothing half-changed is left: the previous ids back, and their capabilities with them.
        (void)syscall(SYS_setfsuid, old_uid);
        (void)syscall(SYS_setfsgid, old_gid);
        struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
        struct __user_cap_data_struct data[2];
        if (syscall(SYS_capget, &header, data) == 0) {
            data[0].effective = data[0].permitted;
            data[1].effective = data[1].permitted;
            (void)syscall(SYS_capset, &header, data);
        }
        errno = saved;
    }
    return rc;
}

int cberth_send_with_descriptors(int socket, const void *buffer, size_t length, const int *fds, int count) {
    if (count < 0 || count > 253) { errno = EINVAL; return -1; }
    char control[CMSG_SPACE(253 * sizeof(int))];
    memset(control, 0, sizeof control);
    struct iovec iov = { .iov_base = (void *)buffer, .iov_len = length };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (count > 0) {
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(count * sizeof(int));
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(count * sizeof(int));
        memcpy(CMSG_DATA(cmsg), fds, count * sizeof(int));
    }
    ssize_t n;
    do { n = sendmsg(socket, &msg, MSG_NOSIGNAL); } while (n < 0 && errno == EINTR);
    if (n < 0) return -1;
    if ((size_t)n != length) { errno = EMSGSIZE; return -1; }
    return 0;
}

ssize_t cberth_receive_with_descriptors(int socket, void *buffer, size_t length, int *fds, int max, int *count) {
    char control[CMSG_SPACE(253 * sizeof(int))];
    struct iovec iov = { .iov_base = buffer, .iov_len = length };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
    ssize_t n;
    do { n = recvmsg(socket, &msg, MSG_CMSG_CLOEXEC); } while (n < 0 && errno == EINTR);
    if (n < 0) return -1;
    *count = 0;
    for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
        int received = (int)((cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < received; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof fd);
            if (*count < max) fds[(*count)++] = fd; else close(fd);
        }
    }
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) { errno = EMSGSIZE; return -1; }
    return n;
}

int cberth_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int cberth_seqpacket_pair(int fds[2]) { return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds); }

int cberth_memfd_create(const char *name) { return (int)syscall(SYS_memfd_create, name, 1U /* MFD_CLOEXEC */ | 2U /* MFD_ALLOW_SEALING */); }

int cberth_seal_completely(int fd) {
    return fcntl(fd, 1033 /* F_ADD_SEALS */, 0x0001 /* SEAL */ | 0x0002 /* SHRINK */ | 0x0004 /* GROW */ | 0x0008 /* WRITE */);
}

int cberth_execveat_empty(int fd, char *const argv[], char *const envp[]) {
    return (int)syscall(SYS_execveat, fd, "", argv, envp, AT_EMPTY_PATH);
}
