// What PID 1 of the container is, seen from inside as an attacker looking for the host's
// binary to overwrite (CVE-2019-5736): the target of /proc/1/exe and the device and inode it
// opens, whether it opens for writing (closed at once, nothing written), PID 1's mappings, and
// whether /proc/1/mem reads from the first mapped file. One "key=value" line each; every
// mapping as "map: LINE".
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *result(int ok) { return ok ? "ok" : strerror(errno); }

int main(void) {
    char target[4096];
    ssize_t n = readlink("/proc/1/exe", target, sizeof target - 1);
    if (n >= 0) target[n] = 0;
    printf("exe=%s\n", n >= 0 ? target : strerror(errno));

    struct stat st;
    if (stat("/proc/1/exe", &st) == 0)
        printf("exe-id=%" PRIu64 " %" PRIu64 "\n", (uint64_t)st.st_dev, (uint64_t)st.st_ino);
    else
        printf("exe-id=%s\n", strerror(errno));

    int fd = open("/proc/1/exe", O_WRONLY);
    printf("exe-write=%s\n", result(fd >= 0));
    if (fd >= 0) close(fd);
    fd = open("/proc/1/exe", O_RDONLY);
    printf("exe-read=%s\n", result(fd >= 0));
    if (fd >= 0) close(fd);

    FILE *maps = fopen("/proc/1/maps", "r");
    if (!maps) {
        printf("maps=%s\n", strerror(errno));
        return 0;
    }
    printf("maps=ok\n");
    char line[8192];
    uintptr_t first = 0;
    while (fgets(line, sizeof line, maps)) {
        printf("map: %s", line);
        if (!first && strchr(line, '/')) first = (uintptr_t)strtoull(line, NULL, 16);
    }
    fclose(maps);
    if (first) {
        int mem = open("/proc/1/mem", O_RDONLY);
        char bytes[16];
        int ok = mem >= 0 && pread(mem, bytes, sizeof bytes, (off_t)first) == (ssize_t)sizeof bytes;
        printf("mem=%s\n", result(ok));
        if (mem >= 0) close(mem);
    }
    return 0;
}
