#define _GNU_SOURCE
#include "cberth.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

struct cberth_open_how {
    uint64_t flags;
    uint64_t mode;
    uint64_t resolve;
};

int cberth_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve) {
    struct cberth_open_how how = { .flags = flags, .mode = mode, .resolve = resolve };
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
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
