// trywrite PATH VALUE: opens PATH for writing, writes VALUE, and prints
// "PATH open=RESULT write=RESULT", each RESULT "ok" or the errno's name. A write refused at
// open, or with EPERM, EACCES or EROFS, never reached the file; EINVAL means the kernel read
// the value (and rejected it), so the file was writable.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *name(int error) {
    switch (error) {
    case 0: return "ok";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case EROFS: return "EROFS";
    case EINVAL: return "EINVAL";
    case ENOENT: return "ENOENT";
    case EBUSY: return "EBUSY";
    case ETXTBSY: return "ETXTBSY";
    default: return strerror(error);
    }
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int fd = open(argv[1], O_WRONLY);
    if (fd < 0) {
        printf("%s open=%s write=none\n", argv[1], name(errno));
        return 1;
    }
    ssize_t written = write(fd, argv[2], strlen(argv[2]));
    int error = written < 0 ? errno : 0;
    close(fd);
    printf("%s open=ok write=%s\n", argv[1], name(error));
    return error ? 1 : 0;
}
