import BerthSystem
import Glibc

/// systemd-nspawn 252's default system call filter, which every container gets.
///
/// The container may make the calls of the groups and the single calls below (the facts come from
/// systemd v252.31's nspawn-seccomp.c and seccomp-util.c, the stable release nearest Debian
/// bookworm's 252.39). A call of the list guarded by a capability is allowed only when the
/// container keeps that capability in its bounding set, since without it the kernel would refuse
/// the call anyway and its code need not be reachable. Every other call systemd 252 knows by name
/// fails with EPERM, which programs take for "not allowed here"; a call it does not know (one newer
/// than its list, or than this libseccomp) fails with ENOSYS, which programs take for "not in this
/// kernel" and fall back from. Names that this libseccomp or architecture lacks are skipped, as
/// nspawn skips them. One more rule: an audit socket, socket(AF_NETLINK, *, NETLINK_AUDIT), fails
/// with EAFNOSUPPORT, which audit's userspace takes for a kernel without audit (audit does not
/// work in a container).
enum SyscallFilter {
    /// What a container may call: a group (`@name`) or a single call, with the capability it needs.
    /// Deliberately absent, as in nspawn: @cpu-emulation, @keyring (keys are not namespaced),
    /// @obsolete, @pkey, @swap, bpf, fanotify_init/fanotify_mark, kexec_load/kexec_file_load,
    /// lookup_dcookie, nfsservctl, open_by_handle_at (with name_to_handle_at it opens any inode of
    /// a file system by number, whatever directory the container was given), perf_event_open
    /// and quotactl.
    static let allowList: [(name: String, capability: Capabilities?)] =
        ["@aio", "@basic-io", "@chown", "@default", "@file-system", "@io-event", "@ipc", "@mount", "@network-io",
         "@process", "@resources", "@setuid", "@signal", "@sync", "@timer"].map { ($0, nil) }
        + [("@clock", .sysTime), ("@module", .sysModule), ("@raw-io", .sysRawIO), ("@memlock", .ipcLock)]
        + words("""
            brk capget capset copy_file_range fadvise64 fadvise64_64 flock get_mempolicy getcpu getpriority
            getrandom ioctl ioprio_get kcmp madvise mincore mprotect mremap name_to_handle_at oldolduname
            olduname personality readahead readdir remap_file_pages sched_get_priority_max
            sched_get_priority_min sched_getaffinity sched_getattr sched_getparam sched_getscheduler
            sched_rr_get_interval sched_rr_get_interval_time64 sched_yield seccomp sendfile sendfile64
            setdomainname setfsgid setfsgid32 setfsuid setfsuid32 sethostname setpgid setsid splice sysinfo
            tee umask uname userfaultfd vmsplice
            """).map { ($0, nil) }
        + [("acct", .sysPacct), ("process_vm_readv", .sysPtrace), ("process_vm_writev", .sysPtrace),
           ("ptrace", .sysPtrace), ("reboot", .sysBoot), ("syslog", .syslog), ("vhangup", .sysTTYConfig)]

    /// systemd 252's groups that the list names, and @obsolete, which counts as known.
    static let groups: [String: String] = [
        // Groups the default list leaves out, which --system-call-filter= may name.
        "@cpu-emulation": "modify_ldt subpage_prot switch_endian vm86 vm86old",
        "@debug": "lookup_dcookie perf_event_open pidfd_getfd ptrace rtas s390_runtime_instr sys_debug_setcontext",
        "@keyring": "add_key keyctl request_key",
        "@pkey": "pkey_alloc pkey_free pkey_mprotect",
        "@privileged": """
            @chown @clock @module @raw-io @reboot @swap _sysctl acct bpf capset chroot fanotify_init fanotify_mark
            nfsservctl open_by_handle_at pivot_root quotactl quotactl_fd setdomainname setfsuid setfsuid32 setgroups
            setgroups32 sethostname setresuid setresuid32 setreuid setreuid32 setuid setuid32 vhangup
            """,
        "@reboot": "kexec_file_load kexec_load reboot",
        "@swap": "swapoff swapon",
        "@system-service": """
            @aio @basic-io @chown @default @file-system @io-event @ipc @keyring @memlock @network-io @process
            @resources @setuid @signal @sync @timer arm_fadvise64_64 capget capset copy_file_range fadvise64
            fadvise64_64 flock get_mempolicy getcpu getpriority ioctl ioprio_get kcmp madvise mremap
            name_to_handle_at oldolduname olduname personality readahead readdir remap_file_pages
            sched_get_priority_max sched_get_priority_min sched_getattr sched_getparam sched_getscheduler
            sched_rr_get_interval sched_rr_get_interval_time64 sched_yield sendfile sendfile64 setfsgid setfsgid32
            setfsuid setfsuid32 setpgid setsid splice sysinfo tee umask uname userfaultfd vmsplice
            """,
        "@aio": """
            io_cancel io_destroy io_getevents io_pgetevents io_pgetevents_time64 io_setup io_submit
            io_uring_enter io_uring_register io_uring_setup
            """,
        "@basic-io": """
            _llseek close close_range dup dup2 dup3 lseek pread64 preadv preadv2 pwrite64 pwritev pwritev2
            read readv write writev
            """,
        "@chown": """
            chown chown32 fchown fchown32 fchownat lchown lchown32
            """,
        "@clock": """
            adjtimex clock_adjtime clock_adjtime64 clock_settime clock_settime64 settimeofday
            """,
        "@default": """
            arch_prctl brk cacheflush clock_getres clock_getres_time64 clock_gettime clock_gettime64
            clock_nanosleep clock_nanosleep_time64 execve exit exit_group futex futex_time64 futex_waitv
            get_robust_list get_thread_area getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups
            getgroups32 getpgid getpgrp getpid getppid getrandom getresgid getresgid32 getresuid getresuid32
            getrlimit getsid gettid gettimeofday getuid getuid32 membarrier mmap mmap2 mprotect munmap
            nanosleep pause prlimit64 restart_syscall riscv_flush_icache riscv_hwprobe rseq rt_sigreturn
            sched_getaffinity sched_yield set_robust_list set_thread_area set_tid_address set_tls sigreturn
            time ugetrlimit
            """,
        "@file-system": """
            access chdir chmod close creat faccessat faccessat2 fallocate fchdir fchmod fchmodat fchmodat2
            fcntl fcntl64 fgetxattr flistxattr fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs
            fstatfs64 ftruncate ftruncate64 futimesat getcwd getdents getdents64 getxattr inotify_add_watch
            inotify_init inotify_init1 inotify_rm_watch lgetxattr link linkat listxattr llistxattr
            lremovexattr lsetxattr lstat lstat64 mkdir mkdirat mknod mknodat newfstatat oldfstat oldlstat
            oldstat open openat openat2 readlink readlinkat removexattr rename renameat renameat2 rmdir
            setxattr stat stat64 statfs statfs64 statx symlink symlinkat truncate truncate64 unlink unlinkat
            utime utimensat utimensat_time64 utimes
            """,
        "@io-event": """
            _newselect epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2
            epoll_wait epoll_wait_old eventfd eventfd2 poll ppoll ppoll_time64 pselect6 pselect6_time64
            select
            """,
        "@ipc": """
            ipc memfd_create mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64
            mq_timedsend mq_timedsend_time64 mq_unlink msgctl msgget msgrcv msgsnd pipe pipe2
            process_madvise process_vm_readv process_vm_writev semctl semget semop semtimedop
            semtimedop_time64 shmat shmctl shmdt shmget
            """,
        "@memlock": """
            mlock mlock2 mlockall munlock munlockall
            """,
        "@module": """
            delete_module finit_module init_module
            """,
        "@mount": """
            chroot fsconfig fsmount fsopen fspick mount mount_setattr move_mount open_tree pivot_root umount
            umount2
            """,
        "@network-io": """
            accept accept4 bind connect getpeername getsockname getsockopt listen recv recvfrom recvmmsg
            recvmmsg_time64 recvmsg send sendmmsg sendmsg sendto setsockopt shutdown socket socketcall
            socketpair
            """,
        "@obsolete": """
            _sysctl afs_syscall bdflush break create_module ftime get_kernel_syms getpmsg gtty idle lock mpx
            prof profil putpmsg query_module security sgetmask ssetmask stime stty sysfs tuxcall ulimit
            uselib ustat vserver
            """,
        "@process": """
            capget clone clone3 execveat fork getrusage kill pidfd_open pidfd_send_signal prctl
            rt_sigqueueinfo rt_tgsigqueueinfo setns swapcontext tgkill times tkill unshare vfork wait4
            waitid waitpid
            """,
        "@raw-io": """
            ioperm iopl pciconfig_iobase pciconfig_read pciconfig_write s390_pci_mmio_read
            s390_pci_mmio_write
            """,
        "@resources": """
            ioprio_set mbind migrate_pages move_pages nice sched_setaffinity sched_setattr sched_setparam
            sched_setscheduler set_mempolicy set_mempolicy_home_node setpriority setrlimit
            """,
        "@setuid": """
            setgid setgid32 setgroups setgroups32 setregid setregid32 setresgid setresgid32 setresuid
            setresuid32 setreuid setreuid32 setuid setuid32
            """,
        "@signal": """
            rt_sigaction rt_sigpending rt_sigprocmask rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64
            sigaction sigaltstack signal signalfd signalfd4 sigpending sigprocmask sigsuspend
            """,
        "@sync": """
            fdatasync fsync msync sync sync_file_range sync_file_range2 syncfs
            """,
        "@timer": """
            alarm getitimer setitimer timer_create timer_delete timer_getoverrun timer_gettime
            timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64
            timerfd_settime timerfd_settime64 times
            """,
    ]

    /// Calls `body` with each call `name` stands for (a group's members, the groups a group
    /// names included, or each word of a list), as a C string.
    static func forEachCall(_ name: String, _ body: (UnsafePointer<CChar>) -> Void) {
        if let members = groups[name] { return forEachCall(members, body) }
        if name == "@known" { return forEachCall(knownCalls, body) }
        var bytes = Array(name.utf8)
        bytes.append(0)
        bytes.withUnsafeMutableBytes { raw in
            let text = raw.bindMemory(to: CChar.self)
            guard let base = text.baseAddress else { return }  // no bytes: no calls
            var start = 0
            for i in text.indices where text[i] == 0x20 || text[i] == 0x0a || text[i] == 0 {
                text[i] = 0
                if i > start && text[start] == 0x40 {  // "@": a group within a group
                    let group = String(cString: base + start)
                    if groups[group] != nil || group == "@known" { forEachCall(group, body) }
                } else if i > start {
                    body(base + start)
                }
                start = i + 1
            }
        }
    }

    private static func words(_ text: String) -> [String] {
        text.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
    }
}
