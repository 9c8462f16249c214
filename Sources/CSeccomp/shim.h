#include <seccomp.h>

// libseccomp spells its architectures and errno actions as macros over <linux/audit.h>
// expressions, which Swift does not import; these hand the values over.
static inline uint32_t cseccomp_arch_x86_64(void) { return SCMP_ARCH_X86_64; }
static inline uint32_t cseccomp_arch_x86(void) { return SCMP_ARCH_X86; }
static inline uint32_t cseccomp_arch_x32(void) { return SCMP_ARCH_X32; }
static inline uint32_t cseccomp_arch_aarch64(void) { return SCMP_ARCH_AARCH64; }
static inline uint32_t cseccomp_arch_arm(void) { return SCMP_ARCH_ARM; }
static inline uint32_t cseccomp_action_errno(uint16_t error) { return SCMP_ACT_ERRNO(error); }

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/syscall.h>
#include <unistd.h>

// seccomp(SECCOMP_SET_MODE_FILTER): loads a classic BPF program for this thread. The syscall is
// variadic in glibc, which Swift cannot call.
static inline int cseccomp_load_program(const struct sock_filter *code, unsigned short length) {
    struct sock_fprog program = { .len = length, .filter = (struct sock_filter *)code };
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program);
}
