// notify COUNT: sends COUNT datagrams "READY=1" to $NOTIFY_SOCKET, as sd_notify(3) does (waiting
// when the reader's queue is full), and prints "sent=N".
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *path = getenv("NOTIFY_SOCKET");
    if (argc != 2 || path == NULL) return 2;
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    strncpy(address.sun_path, path, sizeof address.sun_path - 1);
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (fd < 0) return 1;
    int count = atoi(argv[1]), sent = 0;
    for (int i = 0; i < count; i++) {
        if (sendto(fd, "READY=1", 7, 0, (struct sockaddr *)&address, sizeof address) == 7) sent++;
    }
    printf("sent=%d\n", sent);
    return sent == count ? 0 : 1;
}
