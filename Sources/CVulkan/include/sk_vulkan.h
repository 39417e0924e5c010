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
    uint64_t min_storage_offset_alignment;
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
/// From now on, buffers are never mapped even where their memory is host-visible: every transfer then
/// takes the staging path a discrete GPU without resizable BAR takes (tests run it on lavapipe).
void sk_vk_force_unmapped(sk_vk_context *ctx, int on);
/// 1 when copies go to a queue of their own (a transfer-only family).
int sk_vk_has_transfer_queue(const sk_vk_context *ctx);

/// A buffer in device memory that the host can map (lavapipe's and integrated GPUs' memory is both;
/// discrete GPUs get device-local memory plus a staging copy inside upload/download).
typedef struct sk_vk_buffer sk_vk_buffer;
sk_vk_buffer *sk_vk_buffer_create(sk_vk_context *ctx, uint64_t bytes, char *error, size_t error_len);
void sk_vk_buffer_destroy(sk_vk_context *ctx, sk_vk_buffer *b);
uint64_t sk_vk_buffer_size(const sk_vk_buffer *b);
/// Bytes of device memory the buffer really took (its memory requirements: size rounded up by the driver).
uint64_t sk_vk_buffer_allocated(const sk_vk_buffer *b);
/// The granularity of the device's buffer allocations: a buffer of n bytes takes n rounded up to it.
uint64_t sk_vk_allocation_granularity(sk_vk_context *ctx);
/// The host address of its memory when that memory is host-visible (else NULL).
void *sk_vk_buffer_mapped(const sk_vk_buffer *b);
int sk_vk_upload(sk_vk_context *ctx, sk_vk_buffer *b, uint64_t offset, const void *src, uint64_t bytes, char *error, size_t error_len);
int sk_vk_download(sk_vk_context *ctx, sk_vk_buffer *b, uint64_t offset, void *dst, uint64_t bytes, char *error, size_t error_len);

/// Host memory `src` (`bytes`) for `offset` in the destination.
typedef struct sk_vk_piece { const void *src; uint64_t bytes; uint64_t offset; } sk_vk_piece;
/// Copies `pieces` from host memory into `dst` on the copy queue (the transfer-only family where the
/// device has one, else the compute queue), packed together into reused host-visible staging slots
/// (one submission per slot; the host waits only when every slot is still being read), after the
/// compute timeline has reached `after` — on the device: the last kernel that reads what the copy
/// overwrites (0: none). Returns the copy timeline's value that signals its completion (0 with a
/// message on failure).
uint64_t sk_vk_copy_pieces(sk_vk_context *ctx, sk_vk_buffer *dst, const sk_vk_piece *pieces, uint32_t count, uint64_t after,
                           char *error, size_t error_len);
/// Kernels recorded from now on wait on the device until the copy timeline reaches `value`; the host
/// does not wait.
int sk_vk_copy_wait(sk_vk_context *ctx, uint64_t value, char *error, size_t error_len);
/// The host waits until every copy into `b` has completed (before host code reads its mapping).
int sk_vk_buffer_host_sync(sk_vk_context *ctx, sk_vk_buffer *b, char *error, size_t error_len);
/// Gives `b` back without waiting: destroyed once the device has finished the work submitted or
/// recorded so far (per-op buffers). `sk_vk_buffer_destroy` waits for the device instead, so the memory
/// is free when it returns (what the memory manager's budget counts on).
void sk_vk_buffer_retire(sk_vk_context *ctx, sk_vk_buffer *b);
/// The compute timeline's value that signals when everything recorded so far has finished.
uint64_t sk_vk_compute_mark(sk_vk_context *ctx);
/// The host waits until the device has finished what was recorded up to `sk_vk_compute_mark`'s `value`.
int sk_vk_wait(sk_vk_context *ctx, uint64_t value, char *error, size_t error_len);
/// Submits what is recorded and waits until the device has finished it all.
int sk_vk_finish(sk_vk_context *ctx, char *error, size_t error_len);
/// Bytes of host-visible staging memory held: the copy ring and the readback buffer.
uint64_t sk_vk_staging_bytes(const sk_vk_context *ctx);

/// The compute kernels Sluice ships (SPIR-V compiled from Sources/CVulkan/shaders/*.comp).
typedef enum sk_vk_kernel {
    SK_VK_BINARY = 0,       // out = a (op) b with broadcasting over 4 dims, or a + s·b; push: n, op, offset of a, s, dims, strides
    SK_VK_UNARY = 1,        // SiLU / GELU (erf) / GELU (tanh) / tanh / widen a weight to f32; push: n, mode, dtype
    SK_VK_GEMM = 2,         // out[z,M,N] = a[z,M,K] · b[z,K,N] or b[z,N,K]ᵀ (+ bias), b in any weight dtype;
                            // push: M, N, K, a_stride, b_stride, dtype, transposed, has_bias
    SK_VK_ROWS = 3,         // row-wise RMSNorm / LayerNorm / softmax / GroupNorm; push: rows, D, mode, eps, has_weight, has_bias, groups, hw
    SK_VK_ROTARY = 4,       // rotary embedding; push: rows, D, L, after, interleaved
    SK_VK_UPSAMPLE = 5,     // nearest 2× of NCHW planes; push: planes, H, W
    SK_VK_CONV2D = 6,       // NCHW convolution; push: N, Cin, H, W, Cout, OH, OW, kh, kw, stride, pad, groups, dtype, has_bias
    SK_VK_COPY = 7,         // strided block copy (concat); push: outer, row, out_row, offset
    SK_VK_ATTENTION = 8,    // tiled attention, online softmax; push: Lq, Lk, D, H, scale, has_mask, mask strides b, h, q, k
    SK_VK_GEMM_TILED = 9,   // SK_VK_GEMM register-tiled (64 × 64 per workgroup); same bindings and push
    SK_VK_KERNEL_COUNT = 10
} sk_vk_kernel;

/// A storage-buffer binding: `range` bytes of `buffer` from `offset` (range 0: to the end). The offset
/// must be a multiple of the device's minimum storage-buffer offset alignment, the range within its
/// maximum storage-buffer range.
typedef struct sk_vk_binding { sk_vk_buffer *buffer; uint64_t offset; uint64_t range; } sk_vk_binding;

/// Records `kernel` over `count` bindings (binding i = bindings[i], the last one written) with `push`
/// constants (up to 64 bytes) on a grid of groups into the batch, after a barrier when it reads or
/// writes what an earlier command of the batch wrote (or writes what one read). The batch is submitted
/// every few hundred dispatches and when the host needs a result; nothing here waits.
int sk_vk_dispatch(sk_vk_context *ctx, sk_vk_kernel kernel, const sk_vk_binding *bindings, uint32_t count,
                   const void *push, uint32_t push_bytes, uint32_t groups_x, uint32_t groups_y, uint32_t groups_z,
                   char *error, size_t error_len);
/// How many times `kernel` has been dispatched on this context (tests use it to prove an op ran on the device).
uint64_t sk_vk_dispatch_count(const sk_vk_context *ctx, sk_vk_kernel kernel);

/// Every crossing between host and device since the context opened: queue submissions, times the host
/// waited for the device, bytes copied in (weights through `sk_vk_copy_async`; everything else — op
/// inputs — through `sk_vk_upload`) and bytes read back (`sk_vk_download`, mapped or staged).
typedef struct sk_vk_counters { uint64_t submits, host_waits, weight_bytes_in, other_bytes_in, bytes_out, barriers; } sk_vk_counters;
void sk_vk_get_counters(const sk_vk_context *ctx, sk_vk_counters *out);

/// Device memory as the device granted it: bytes of the buffers alive now (staging apart; buffers given
/// back but still in use count until the device passes them), their peak since the last reset, and
/// where VK_EXT_memory_budget is present the device-local heaps' usage as the driver reports it.
typedef struct sk_vk_memory_stats { uint64_t live, peak, heap_usage; int has_heap_usage; } sk_vk_memory_stats;
void sk_vk_get_memory_stats(sk_vk_context *ctx, sk_vk_memory_stats *out);
void sk_vk_reset_peak(sk_vk_context *ctx);

/// A trace of what the device was asked to do, for tests of ordering: each binding of a dispatch (kind
/// 0 read, 1 written) with the compute value of its batch; each weight copy (kind 2) with the compute
/// value it waited for; each device buffer made (kind 3: an address seen before is a new buffer).
typedef struct sk_vk_trace_entry { int kind; const void *buffer; uint64_t lo, hi, value; } sk_vk_trace_entry;
void sk_vk_trace(sk_vk_context *ctx, int on);
uint32_t sk_vk_trace_read(sk_vk_context *ctx, sk_vk_trace_entry *out, uint32_t capacity);
/// Test hook: weight copies ignore the compute value they must wait for.
void sk_vk_skip_copy_waits(sk_vk_context *ctx, int on);

#ifdef __cplusplus
}
#endif
#endif
