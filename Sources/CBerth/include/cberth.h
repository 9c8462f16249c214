// Linux calls and macros that Swift cannot reach directly: one thin wrapper each, no policy.
#ifndef CBERTH_H
#define CBERTH_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <signal.h>

// Constants Swift does not import from the C library headers.
#define CBERTH_O_PATH 010000000
#define CBERTH_UTIME_NOW 1073741823
#define CBERTH_UTIME_OMIT 1073741822

// openat2(2) resolve flags (linux/openat2.h), repeated so Swift sees them as constants.
#define CBERTH_RESOLVE_NO_XDEV       0x01
#define CBERTH_RESOLVE_NO_MAGICLINKS 0x02
#define CBERTH_RESOLVE_NO_SYMLINKS   0x04
#define CBERTH_RESOLVE_BENEATH       0x08
#define CBERTH_RESOLVE_IN_ROOT       0x10

// renameat2(2) flags.
#define CBERTH_RENAME_NOREPLACE 1
#define CBERTH_RENAME_EXCHANGE  2

// clone(2) namespace flags.
#define CBERTH_CLONE_NEWNS   0x00020000
#define CBERTH_CLONE_NEWUTS  0x04000000
#define CBERTH_CLONE_NEWIPC  0x08000000
#define CBERTH_CLONE_NEWPID  0x20000000
#define CBERTH_CLONE_NEWNET  0x40000000
#define CBERTH_CLONE_NEWUSER 0x10000000
#define CBERTH_CLONE_NEWCGROUP 0x02000000
#define CBERTH_CLONE_PARENT  0x00008000

// mount_setattr(2) and fsmount(2) attributes.
#define CBERTH_MOUNT_ATTR_RDONLY 0x00000001
#define CBERTH_MOUNT_ATTR_NOSUID 0x00000002
#define CBERTH_MOUNT_ATTR_NODEV  0x00000004
#define CBERTH_MOUNT_ATTR_NOEXEC 0x00000008
#define CBERTH_MOUNT_ATTR_IDMAP  0x00100000


/// openat2(2), asked again while the kernel says EAGAIN (a `..` looked up beneath a root while
/// something on the system was mounted or renamed): returns a descriptor or -1 with errno set.
int cberth_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve);
/// flock(2).
int cberth_flock(int fd, int operation);
/// renameat2(2).
int cberth_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags);
/// syncfs(2).
int cberth_syncfs(int fd);
/// ioctl(FS_IOC_GETFLAGS).
int cberth_get_inode_flags(int fd, unsigned int *flags);
/// ioctl(FS_IOC_SETFLAGS).
int cberth_set_inode_flags(int fd, unsigned int flags);
/// ioctl(TIOCGWINSZ): the terminal's width in columns, or -1.
int cberth_terminal_columns(int fd);
/// statx(2) birth time in seconds, or -1 with errno set when the file system does not record it.
int64_t cberth_birth_time(int dirfd, const char *path, int flags);
/// makedev(3), major(3), minor(3).
dev_t cberth_makedev(unsigned int major, unsigned int minor);
unsigned int cberth_major(dev_t dev);
unsigned int cberth_minor(dev_t dev);


// Namespaces, mounts and capabilities, for the container's launch.

/// The new mount API (fsopen(2), fsconfig(2), fsmount(2), move_mount(2)), for overlay stacks:
/// each layer is one `lowerdir+` string, so the stack's depth is not bound by one page of options.
/// fsopen(2) of the file system `type`, close-on-exec.
int cberth_fsopen(const char *type);
/// fsconfig(2) FSCONFIG_SET_STRING `key`=`value`.
int cberth_fsconfig_string(int fs, const char *key, const char *value);
/// fsconfig(2) FSCONFIG_CMD_CREATE.
int cberth_fsconfig_create(int fs);
/// fsmount(2): a detached mount of the created file system with the MOUNT_ATTR_* `attributes`;
/// close-on-exec.
int cberth_fsmount(int fs, uint64_t attributes);
/// open_tree(2) with OPEN_TREE_CLONE: a detached copy of the mount at `path` beneath `dirfd`
/// (the object `dirfd` itself when `path` is empty), with its submounts when `recursive`;
/// close-on-exec.
int cberth_open_tree(int dirfd, const char *path, int recursive);
/// mount_setattr(2) on the mount `fd` refers to: sets and clears MOUNT_ATTR_* flags, with
/// MOUNT_ATTR_IDMAP the user namespace `userns_fd` as the mount's id mapping (-1 for none);
/// over its submounts too when `recursive`.
int cberth_mount_setattr(int fd, uint64_t set, uint64_t clear, int userns_fd, int recursive);
/// Makes the mount `fd` refers to (and its submounts when `recursive`) private: no mount event
/// reaches it from the mounts it was copied from, none goes from it to them.
int cberth_mount_make_private(int fd, int recursive);
/// move_mount(2) of the detached mount `mount_fd` onto exactly the object `target_fd` refers to.
int cberth_move_mount_to_fd(int mount_fd, int target_fd);
/// A new pseudo-terminal master (posix_openpt, grantpt, unlockpt), close-on-exec; the slave's
/// path is written to `name` (`size` bytes). -1 with errno on failure.
int cberth_open_pty(char *name, size_t size);
/// Makes the terminal open on `fd` this process's controlling terminal (TIOCSCTTY).
int cberth_set_controlling_terminal(int fd);
/// Copies the window size of the terminal on `from` to the one on `to` (TIOCGWINSZ/TIOCSWINSZ).
int cberth_copy_window_size(int from, int to);
/// signalfd(2) for the signals in `set` (close-on-exec).
int cberth_signalfd(const sigset_t *set);
/// Puts the terminal on `fd` in raw mode, saving its settings in `saved` (a struct termios of
/// `size` bytes); cberth_restore_terminal puts them back.
int cberth_make_raw(int fd, void *saved, size_t size);
int cberth_restore_terminal(int fd, const void *saved);
/// A datagram socket (AF_UNIX, close-on-exec) bound at `path` (an old socket there is replaced),
/// which anyone may send to (mode 0666): a machine's notify socket. -1 with errno.
int cberth_bind_datagram_socket(const char *path);
/// Sends `size` bytes as one datagram to the AF_UNIX socket at `path` (with a leading '@', an
/// abstract name), as sd_notify(3) does, without waiting on a full queue. -1 with errno.
int cberth_send_datagram(const char *path, const void *data, size_t size);
/// Makes `fd` non-blocking and has the kernel send SIGIO to the calling thread (F_SETOWN_EX,
/// F_OWNER_TID) whenever it becomes readable; -1 with errno.
int cberth_signal_thread_on_input(int fd);
/// A SOCK_SEQPACKET socket (AF_UNIX, close-on-exec) listening at `path` (an old socket there is
/// replaced), for its owner alone (mode 0600): a machine's console, which `berth login` attaches
/// to. -1 with errno.
int cberth_listen_seqpacket(const char *path);
/// A SOCK_SEQPACKET socket (close-on-exec) connected to `path`; -1 with errno.
int cberth_connect_seqpacket(const char *path);
/// Sets the window size of the terminal on `fd` (TIOCSWINSZ).
int cberth_set_window_size(int fd, unsigned short rows, unsigned short columns);
/// The window size of the terminal on `fd` (TIOCGWINSZ); -1 with errno when it is none.
int cberth_get_window_size(int fd, unsigned short *rows, unsigned short *columns);
/// Starts the executable open on `exe_fd` (execveat, AT_EMPTY_PATH) with `argv` and `envp`, its
/// standard streams `streams[0..2]` and `extra_fd` as descriptor 3 (-1 for none), every other
/// descriptor closed, no signal blocked and every disposition the default; with `new_session`,
/// in a session of its own (a machine's supervisor in the background). Returns its pid, or -1
/// with errno; an exec that fails ends the child with 127.
pid_t cberth_spawn_with_streams(int exe_fd, char *const argv[], char *const envp[], const int streams[3], int extra_fd, int new_session);
/// cberth_spawn_with_streams in a session of its own, through a go-between that ends before
/// this returns: the process runs on, no child of the caller's. 0, or -1 with errno.
int cberth_spawn_detached(int exe_fd, char *const argv[], char *const envp[], const int streams[3], int extra_fd);
/// setns(2).
int cberth_setns(int fd, int type);
/// Forks a child that enters the mount namespace `ns_fd` (its root becomes that namespace's
/// root, so no mount is out of its sight) and writes the namespace's whole mountinfo, opened
/// through the procfs directory `proc_fd`, to `out_fd`, then exits 0. Returns the child's pid,
/// or -1 with errno; the caller reads `out_fd`'s other end to its end, then waits for the child.
pid_t cberth_read_mount_namespace(int ns_fd, int proc_fd, int out_fd);
/// prctl(PR_SET_DUMPABLE, 0): no ptrace of this process, no open of its /proc files by others.
int cberth_make_undumpable(void);
/// Opens a new pty on the devpts of the caller's /dev/ptmx: its master (returned) and, in
/// `slave`, its slave opened without becoming a controlling terminal. -1 with errno.
int cberth_open_pty_pair(int *slave);
/// fstatfs(2)'s f_type: the kind of file system `fd` is on; -1 with errno.
long cberth_file_system_type(int fd);
/// clone(2) with `flags` and SIGCHLD, as fork(2) does it (no fork handlers run): 0 in the child,
/// its pid in the parent, -1 with errno. Only for a single-threaded caller.
pid_t cberth_clone_process(unsigned long flags);
/// A child that runs fn(arg) and exits with its result, which should exec or _exit first.
/// With `cgroup_fd` (a directory of the unified hierarchy; -1 for none) it is made in that cgroup
/// by clone3's CLONE_INTO_CGROUP: no migration, so no wait for the RCU grace period a write to
/// cgroup.procs takes. On x86-64 the child shares the caller's memory, on a stack of its own,
/// and the caller waits until it has exec'd or ended (CLONE_VM | CLONE_VFORK, as posix_spawn):
/// fn must balance what it retains, and change nothing the caller relies on. Returns the child's
/// pid, or -1 with errno. Only for a single-threaded caller.
pid_t cberth_clone_process_into(int cgroup_fd, int (*fn)(void *), void *arg);
/// Becomes root of the caller's user namespace, with no supplementary groups: setgroups,
/// setresgid and setresuid to 0. Only for a single-threaded caller.
int cberth_become_namespace_root(void);
/// A new user namespace, mapping ids 0..count-1 onto the host's base.. (users and groups), open
/// as a descriptor: made by a short-lived child sharing the caller's memory, which ends before
/// this returns; the namespace lives while the descriptor is open. -1 with errno on failure.
int cberth_new_user_namespace(unsigned int base, unsigned int count);
/// pivot_root(2).
int cberth_pivot_root(const char *new_root, const char *put_old);
/// prctl(PR_CAPBSET_DROP, cap).
int cberth_drop_bounding_capability(int cap);
/// Sets the calling thread's inheritable capabilities to `set` (a bit per capability), its
/// permitted and effective ones left as they are (capget, then capset).
int cberth_set_inheritable_capabilities(unsigned long long set);
/// prctl(PR_CAPBSET_READ, cap): 1 when the bounding set holds it, 0 when not.
int cberth_bounding_holds(int cap);
/// prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap).
int cberth_raise_ambient_capability(int cap);
/// prctl(PR_SET_KEEPCAPS, keep): the permitted set survives the change from uid 0.
int cberth_keep_capabilities(int keep);
/// prctl(PR_SET_NO_NEW_PRIVS, 1): no exec gains privileges (setuid bits, file capabilities).
int cberth_set_no_new_privileges(void);
/// personality(2), for a persona other than the host's (PER_LINUX32).
int cberth_set_personality(unsigned long persona);
/// prctl(PR_SET_PDEATHSIG, sig).
int cberth_set_parent_death_signal(int sig);
/// Sets IFF_UP on a network interface (SIOCGIFFLAGS/SIOCSIFFLAGS on an AF_INET socket).
int cberth_interface_up(const char *name);
/// close_range(2) from `first` to the last descriptor.
int cberth_close_from(unsigned int first);
/// prctl(PR_SET_NAME): this thread's name, as /proc/PID/comm shows it.
int cberth_set_name(const char *name);
/// setrlimit(2) of `resource` (RLIMIT_*) to `soft` and `hard` (RLIM_INFINITY as all ones), or as
/// near as the present hard limit lets them without CAP_SYS_RESOURCE (systemd's setrlimit_closest).
int cberth_set_limit(int resource, unsigned long long soft, unsigned long long hard);
/// prlimit(2): process `pid`'s limit of `resource`. -1 with errno.
int cberth_get_limit(pid_t pid, int resource, unsigned long long *soft, unsigned long long *hard);
/// sched_setaffinity(2) of the caller to the `count` CPUs in `cpus`. -1 with errno.
int cberth_set_cpus(const int *cpus, int count);
/// SIGRTMIN+n (glibc computes SIGRTMIN at run time).
int cberth_sigrtmin_plus(int n);

/// The one fork/exec routine: clone(2) with `flags` (namespace flags; SIGCHLD is added), and in the
/// child only async-signal-safe calls: default signal dispositions, `spec_fd` duplicated to 3
/// (when not -1), no signal blocked, then the executable open on `exe_fd` run with execveat(2)
/// (AT_EMPTY_PATH: no path is looked up, so the child needs no access to the directories it is in),
/// or with `exe_fd` -1 the executable at `path` (execve, so a script's interpreter can open it).
/// With `new_session` the child starts a session of its own, whose controlling terminal is the
/// terminal on its standard input, if any.
/// With `cgroup_fd` (a directory of the unified cgroup hierarchy; -1 for none) the child is made
/// in that cgroup (clone3 with CLONE_INTO_CGROUP).
/// Returns the child's pid and, in `report_fd`, a pipe on which cberth_spawn_result learns
/// whether the exec succeeded; -1 with errno when the child could not be made.
pid_t cberth_spawn(unsigned long flags, int exe_fd, const char *path, char *const argv[], char *const envp[], int spec_fd,
                   int cgroup_fd, int new_session, int *report_fd);
/// Waits until the child cberth_spawn made has run its executable (0) or failed before it
/// (-1 with the child's errno, the child reaped), and closes `report_fd`.
int cberth_spawn_result(pid_t pid, int report_fd);

/// bpf(BPF_PROG_LOAD) of a BPF_PROG_TYPE_CGROUP_DEVICE program of `count` instructions
/// (struct bpf_insn, 8 bytes each); the program's descriptor (close-on-exec), or -1.
int cberth_bpf_load_device_program(const void *instructions, uint32_t count);
/// Leaves `program_fd` the only BPF_CGROUP_DEVICE program on `target_fd`: attached (with
/// BPF_F_ALLOW_MULTI) unless one with its tag (the hash of its instructions) is there already,
/// and every other detached once it is. 0 when it was there, 1 when attached now, -1 with errno.
int cberth_bpf_settle_device_program(int target_fd, int program_fd);
/// bpf(BPF_PROG_ATTACH) of `program_fd` to `target_fd` as BPF_CGROUP_DEVICE, with `flags`.
int cberth_bpf_attach_device_program(int target_fd, int program_fd, uint32_t flags);
#define CBERTH_BPF_CGROUP_DEVICE 6
#define CBERTH_BPF_F_ALLOW_MULTI 2



// User namespaces, descriptor passing, sealed executables.

/// Sets this thread's file-system user and group ids (setfsuid/setfsgid), then makes every
/// permitted capability effective again (the change of fsuid drops the file-system ones), so
/// that what this thread creates is owned by `uid`:`gid` while it keeps its privileges.
int cberth_use_file_system_ids(uid_t uid, gid_t gid);
/// sendmsg(2) of `length` bytes of `buffer` with `count` descriptors (SCM_RIGHTS) on `socket`.
int cberth_send_with_descriptors(int socket, const void *buffer, size_t length, const int *fds, int count);
/// recvmsg(2) of one message into `buffer`, with up to `max` descriptors (close-on-exec) into
/// `fds` and their number in `count`. Returns the message's length; -1 with EMSGSIZE when the
/// message or its descriptors did not fit.
ssize_t cberth_receive_with_descriptors(int socket, void *buffer, size_t length, int *fds, int max, int *count);
/// pipe2(2) with O_CLOEXEC.
int cberth_pipe_cloexec(int fds[2]);
/// socketpair(2) of AF_UNIX SOCK_SEQPACKET, close-on-exec.
int cberth_seqpacket_pair(int fds[2]);
/// memfd_create(2) with MFD_CLOEXEC|MFD_ALLOW_SEALING.
int cberth_memfd_create(const char *name);
/// Seals the memfd `fd` against every change (F_SEAL_SEAL, SHRINK, GROW, WRITE).
int cberth_seal_completely(int fd);
/// execveat(2) of the executable open on `fd` (AT_EMPTY_PATH).
int cberth_execveat_empty(int fd, char *const argv[], char *const envp[]);

#endif
