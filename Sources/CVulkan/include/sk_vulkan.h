// Sluice's thin C layer over Vulkan compute. Swift sees only these plain types and functions; the
// Vulkan structs, sTypes and handles stay in C. The loader (libvulkan.so.1) is opened with dlopen at
// run time, so the binary has no link-time dependency on it, and when the Vulkan headers were absent at
// build time every function reports "not built with Vulkan" — the CPU backend is used instead.
#ifndef SK_VULKAN_H
#define SK_VULKAN_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sk_vk_heap { uint64_t size; uint64_t budget; int device_local; } sk_vk_heap;
typedef struct sk_vk_queue_family { uint32_t count; int graphics, compute, transfer; } sk_vk_queue_family;
typedef struct sk_vk_device_info {
    char name[256];
    char driver[256];
    int type;                 // VkPhysicalDeviceType: 1 integrated, 2 discrete, 3 virtual, 4 cpu
    uint32_t api_version;
    uint32_t heap_count;
    sk_vk_heap heaps[16];
    uint32_t family_count;
    sk_vk_queue_family families[16];
    int has_memory_budget;
    int has_timeline_semaphore;
    uint64_t max_storage_buffer_range;
    uint32_t subgroup_size;
} sk_vk_device_info;

/// 0 on success; otherwise a message in `error` (size `error_len`).
int sk_vk_available(char *error, size_t error_len);
/// Number of physical devices (or −1 with a message).
int sk_vk_device_count(char *error, size_t error_len);
int sk_vk_device_info_at(int index, sk_vk_device_info *out, char *error, size_t error_len);

/// A logical device with one compute queue (and a transfer queue where the device has a separate family).
typedef struct sk_vk_context sk_vk_context;
sk_vk_context *sk_vk_open(int index, char *error, size_t error_len);
void sk_vk_close(sk_vk_context *ctx);
/// 1 when copies go to a queue of their own (a transfer-only family).
int sk_vk_has_transfer_queue(const sk_vk_context *ctx);

/// A buffer in device memory that the host can map (lavapipe's and integrated GPUs' memory is both;
/// discrete GPUs get device-local memory plus a staging copy inside upload/download).
typedef struct sk_vk_buffer sk_vk_buffer;
sk_vk_buffer *sk_vk_buffer_create(sk_vk_context *ctx, uint64_t bytes, char *error, size_t error_len);
void sk_vk_buffer_destroy(sk_vk_context *ctx, sk_vk_buffer *b);
uint64_t sk_vk_buffer_size(const sk_vk_buffer *b);
int sk_vk_upload(sk_vk_context *ctx, sk_vk_buffer *b, uint64_t offset, const void *src, uint64_t bytes, char *error, size_t error_len);
int sk_vk_download(sk_vk_context *ctx, sk_vk_buffer *b, uint64_t offset, void *dst, uint64_t bytes, char *error, size_t error_len);

/// The compute kernels Sluice ships (SPIR-V compiled from Sources/CVulkan/shaders/*.comp).
typedef enum sk_vk_kernel {
    SK_VK_BINARY = 0,       // out = a (op) b with row broadcasting; push: n, b_n, op
    SK_VK_SILU = 1,         // out = x · sigmoid(x); push: n
    SK_VK_MATMUL_T = 2,     // out[M,N] = a[M,K] · w[N,K]ᵀ (+ bias); w f32 or bf16; push: M, N, K, w_bf16, has_bias
    SK_VK_ROWS = 3,         // row-wise RMSNorm / LayerNorm / softmax; push: rows, D, mode, eps, has_weight, has_bias
    SK_VK_ROTARY = 4,       // rotary embedding; push: rows, D, L, after, interleaved
    SK_VK_UPSAMPLE = 5,     // nearest 2× of NCHW planes; push: planes, H, W
    SK_VK_KERNEL_COUNT = 6
} sk_vk_kernel;

/// Runs `kernel` over `buffer_count` storage buffers (binding i = buffers[i]) with `push` constants
/// (up to 64 bytes) on a grid of groups; waits for completion on a timeline semaphore.
int sk_vk_dispatch(sk_vk_context *ctx, sk_vk_kernel kernel, sk_vk_buffer *const *buffers, uint32_t buffer_count,
                   const void *push, uint32_t push_bytes, uint32_t groups_x, uint32_t groups_y, uint32_t groups_z,
                   char *error, size_t error_len);

#ifdef __cplusplus
}
#endif
#endif
