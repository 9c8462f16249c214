#include <seccomp.h>

// libseccomp spells its architectures and errno actions as macros over <linux/audit.h>
// expressions, which Swift does not import; these hand the values over.
static inline uint32_t cseccomp_arch_x86_64(void) { return SCMP_ARCH_X86_64; }
static inline uint32_t cseccomp_arch_x86(void) { return SCMP_ARCH_X86; }
static inline uint32_t cseccomp_arch_x32(void) { return SCMP_ARCH_X32; }
static inline uint32_t cseccomp_arch_aarch64(void) { return SCMP_ARCH_AARCH64; }
static inline uint32_t cseccomp_arch_arm(void) { return SCMP_ARCH_ARM; }
static inline uint32_t cseccomp_action_errno(uint16_t error) { return SCMP_ACT_ERRNO(error); }
