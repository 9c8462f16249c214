// Prints the effective and real user ids it runs with: a setuid-root copy of this in an image
// shows whether a mount of the image honours the setuid bit.
#include <stdio.h>
#include <unistd.h>

int main(void) {
    printf("euid=%d uid=%d\n", (int)geteuid(), (int)getuid());
    return 0;
}
